set terminal pngcairo size 760,520 noenhanced
set output "Docs/benchmarks/compare-cold.png"
set multiplot layout 1,1 title "Server core CPU seconds per GB served, 1600 connections (lower is better)"
set style data histogram
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.7
set ylabel "CPU s / GB"
set grid ytics
set xtics rotate by -30
set key top left
set title "500KiB"
set yrange [0:4.1334]
plot "Docs/benchmarks/compare-cold.dat" index 0 using 2:xtic(1) title "host process", "" index 0 using 3 title "NIC stack", "" index 0 using 4 title "kernel, rest of the core"
unset key
unset multiplot
