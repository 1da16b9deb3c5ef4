set terminal pngcairo size 860,520 noenhanced
set output "Docs/benchmarks/compare-short.png"
set multiplot layout 1,2 title "Server core CPU seconds per GB served, 100 connections (lower is better)"
set style data histogram
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.7
set ylabel "CPU s / GB"
set grid ytics
set xtics rotate by -30
set key top left
set title "64B"
set yrange [0:404.2671]
plot "Docs/benchmarks/compare-short.dat" index 0 using 2:xtic(1) title "host process", "" index 0 using 3 title "NIC stack", "" index 0 using 4 title "kernel, rest of the core"
unset key
set title "4KiB"
set yrange [0:24.0243]
plot "Docs/benchmarks/compare-short.dat" index 1 using 2:xtic(1) title "host process", "" index 1 using 3 title "NIC stack", "" index 1 using 4 title "kernel, rest of the core"
unset multiplot
