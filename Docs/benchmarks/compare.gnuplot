set terminal pngcairo size 900,500 noenhanced
set output "Docs/benchmarks/compare.png"
set title "Host-side CPU seconds per GB served, 1600 connections (lower is better)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set ylabel "CPU s / GB"
set key top left
set datafile missing "?"
set grid ytics
plot "Docs/benchmarks/compare.dat" using 2:xtic(1) title columnheader(2), "Docs/benchmarks/compare.dat" using 3:xtic(1) title columnheader(3), "Docs/benchmarks/compare.dat" using 4:xtic(1) title columnheader(4), "Docs/benchmarks/compare.dat" using 5:xtic(1) title columnheader(5)
