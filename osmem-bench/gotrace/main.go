// gotrace runs osmem's heap trace on the real Go runtime: the same seeded sequence of
// allocations and frees that osmem-bench's trace runs on osmem-heap (checked by a hash of
// the events), a steady churn, and a mutator goroutine writing its own 32 MiB. It samples
// live bytes, RSS, minor faults, process CPU and the runtime's own heap metrics every 50 ms
// and prints one JSON document. Standard library only.
//
//	go run . [-size-div N] [-time-div N] [-free-os-memory]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// monotonic is CLOCK_MONOTONIC in seconds: the clock perf records the madvise calls with, so
// the report counts the calls made between the trace's start and end only (not the runtime's
// start-up or exit).
func monotonic() float64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

const page = 4096

// splitmix64: the generator both sides implement.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// fnv1a over the events, as the Rust side computes it.
type hash struct{ h uint64 }

func (h *hash) add(v uint64) {
	for i := 0; i < 8; i++ {
		h.h ^= (v >> (8 * i)) & 0xff
		h.h *= 0x100000001b3
	}
}

type phase struct {
	ms     int64  // duration
	target uint64 // live bytes at its end
	shrink bool
}

// The schedule (before scaling): grow to 1 GiB in 2 s, hold 1 s, shrink to 128 MiB in
// 0.5 s, hold 8 s, grow to 512 MiB in 1 s, hold 1 s, shrink to 64 MiB in 0.5 s, hold 8 s.
func schedule(sizeDiv, timeDiv int64) []phase {
	g := func(b uint64) uint64 { return b / uint64(sizeDiv) }
	t := func(ms int64) int64 { return ms / timeDiv }
	return []phase{
		{t(2000), g(1 << 30), false},
		{t(1000), g(1 << 30), false},
		{t(500), g(128 << 20), true},
		{t(8000), g(128 << 20), false},
		{t(1000), g(512 << 20), false},
		{t(1000), g(512 << 20), false},
		{t(500), g(64 << 20), true},
		{t(8000), g(64 << 20), false},
	}
}

const tickMs = 10

type sample struct {
	T        float64 `json:"t"`
	Live     uint64  `json:"live"`
	RSS      uint64  `json:"rss"`
	MinFlt   int64   `json:"minflt"`
	CPU      float64 `json:"cpu"`
	Released uint64  `json:"released"`
	Free     uint64  `json:"free"`
	Mutator  uint64  `json:"mutator_pages"`
}

type gcEnd struct {
	Tick int64  `json:"tick"`
	Goal uint64 `json:"heap_goal"`
}

func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res uint64
	fmt.Sscan(string(b), &size, &res)
	return res * page
}

func usage() (int64, float64) {
	var u syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	cpu := float64(u.Utime.Sec+u.Stime.Sec) + float64(u.Utime.Usec+u.Stime.Usec)/1e6
	return u.Minflt, cpu
}

func main() {
	sizeDiv := flag.Int64("size-div", 1, "divide every size by this")
	timeDiv := flag.Int64("time-div", 1, "divide every duration by this")
	freeOS := flag.Bool("free-os-memory", false, "debug.FreeOSMemory() at the end of each shrink (Go's best path)")
	flag.Parse()

	var mutated atomic.Uint64
	stop := make(chan struct{})
	go func() {
		mem := make([]byte, 32<<20)
		n := len(mem) / page
		k := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := 0; i < 64; i++ {
				mem[(k%n)*page] = byte(k)
				k++
			}
			mutated.Add(64)
		}
	}()

	ms := []metrics.Sample{
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/goal:bytes"},
	}
	end := []metrics.Sample{
		{Name: "/cpu/classes/scavenge/background:cpu-seconds"},
		{Name: "/cpu/classes/scavenge/assist:cpu-seconds"},
		{Name: "/cpu/classes/scavenge/total:cpu-seconds"},
	}

	r := rng{s: 0x05ec_c0de}
	var h hash
	h.h = 0xcbf29ce484222325
	var live [][]byte
	var liveBytes uint64
	alloc := func() {
		size := uint64(64<<10) + (r.next()%241)*page
		size /= uint64(*sizeDiv)
		size = (size + page - 1) / page * page
		b := make([]byte, size)
		for i := 0; i < len(b); i += page {
			b[i] = 1
		}
		live = append(live, b)
		liveBytes += size
		h.add(1)
		h.add(size)
	}
	free := func() {
		k := int(r.next() % uint64(len(live)))
		size := uint64(len(live[k]))
		live[k] = live[len(live)-1]
		live[len(live)-1] = nil
		live = live[:len(live)-1]
		liveBytes -= size
		h.add(2)
		h.add(uint64(k))
	}

	phases := schedule(*sizeDiv, *timeDiv)
	churnPerTick := uint64(64<<20) / uint64(*sizeDiv) * tickMs / 1000
	var samples []sample
	var gcs []gcEnd
	// The mutator alone first (300 ms, after 50 ms to start): the rate "kept" is against this.
	time.Sleep(50 * time.Millisecond)
	m0, a0 := mutated.Load(), time.Now()
	time.Sleep(300 * time.Millisecond)
	alone := float64(mutated.Load()-m0) / time.Since(a0).Seconds()
	start := time.Now()
	windowStart := monotonic()
	var lastCycles uint64
	tick := int64(0)
	from := uint64(0)
	for _, p := range phases {
		n := p.ms / tickMs
		for i := int64(1); i <= n; i++ {
			target := from + (p.target-from)*uint64(i)/uint64(n)
			if p.target < from {
				target = from - (from-p.target)*uint64(i)/uint64(n)
			}
			// Churn: free about 640 KiB of buffers and allocate as much again.
			var churned uint64
			for churned < churnPerTick && len(live) > 1 {
				before := liveBytes
				free()
				churned += before - liveBytes
			}
			for liveBytes < target || churned > 0 {
				before := liveBytes
				alloc()
				if churned > liveBytes-before {
					churned -= liveBytes - before
				} else {
					churned = 0
				}
			}
			for liveBytes > target && len(live) > 0 {
				free()
			}
			if p.shrink && i == n {
				if *freeOS {
					debug.FreeOSMemory()
				} else {
					runtime.GC()
				}
			}
			tick++
			// Keep time: tick k ends at k × 10 ms (scaled).
			due := start.Add(time.Duration(tick*tickMs) * time.Millisecond)
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
			metrics.Read(ms)
			if c := ms[2].Value.Uint64(); c != lastCycles {
				lastCycles = c
				gcs = append(gcs, gcEnd{Tick: tick, Goal: ms[3].Value.Uint64()})
			}
			if tick%5 == 0 {
				flt, cpu := usage()
				samples = append(samples, sample{
					T: time.Since(start).Seconds(), Live: liveBytes, RSS: rss(),
					MinFlt: flt, CPU: cpu, Released: ms[0].Value.Uint64(),
					Free: ms[1].Value.Uint64(), Mutator: mutated.Load(),
				})
			}
		}
		from = p.target
	}
	windowEnd := monotonic()
	close(stop)
	metrics.Read(end)
	out := map[string]any{
		"runtime":                   runtime.Version(),
		"hash":                      fmt.Sprintf("%016x", h.h),
		"ticks":                     tick,
		"samples":                   samples,
		"mutator_alone_pages_per_s": alone,
		"gc_ends":                   gcs,
		"window":                    []float64{windowStart, windowEnd},
		"scavenge_background_cpu_s": end[0].Value.Float64(),
		"scavenge_assist_cpu_s":     end[1].Value.Float64(),
		"scavenge_total_cpu_s":      end[2].Value.Float64(),
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
