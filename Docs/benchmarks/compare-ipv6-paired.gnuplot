set terminal pngcairo size 1240,520 noenhanced
set output "Docs/benchmarks/compare-ipv6-paired.png"
set multiplot layout 1,3 title "Server core CPU seconds per GB served, 1600 connections (lower is better)"
set style data histogram
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.7
set ylabel "CPU s / GB"
set grid ytics
set xtics rotate by -30
set key top left
set title "4KiB"
set yrange [0:5.5795]
plot "Docs/benchmarks/compare-ipv6-paired.dat" index 0 using 2:xtic(1) title "host process", "" index 0 using 3 title "NIC stack", "" index 0 using 4 title "kernel, rest of the core"
unset key
set title "500KiB"
set yrange [0:0.3836]
plot "Docs/benchmarks/compare-ipv6-paired.dat" index 1 using 2:xtic(1) title "host process", "" index 1 using 3 title "NIC stack", "" index 1 using 4 title "kernel, rest of the core"
set title "10MiB"
set yrange [0:0.5180]
plot "Docs/benchmarks/compare-ipv6-paired.dat" index 2 using 2:xtic(1) title "host process", "" index 2 using 3 title "NIC stack", "" index 2 using 4 title "kernel, rest of the core"
unset multiplot
