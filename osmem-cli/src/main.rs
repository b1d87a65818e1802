fn main() {
    let p = osmem::probe();
    println!("{p:#?} {}", p.release());
    println!("{:#?}", osmem::selected());
    let ps = osmem::page_size();
    let r = osmem::Reservation::reserve(64 * ps).unwrap();
    r.map(0, 16 * ps).unwrap();
    r.used(0, 16 * ps).unwrap();
    unsafe { r.as_ptr().write_bytes(1, 16*ps) };
    println!("{:?}", unsafe { r.unused(0, 8 * ps) });
    println!("{:?}", unsafe { r.fault(8*ps, 8 * ps) });
    println!("{:?}", r.map(8*ps, 8 * ps));
    println!("{:?}", r.map(8*ps, 8 * ps));
    println!("{:#?}", osmem::stats());
}
