module osmem/gotrace

go 1.27
