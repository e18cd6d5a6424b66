# tiny-sparse: C synthesis of llmc_accel with classic Vitis HLS: vitis_hls -f run_hls.tcl
cd [file dirname [file normalize [info script]]]
set root [pwd]
open_project -reset build/vitis_hls
set_top llmc_accel
add_files kernel/llmc_accel.cpp -cflags "-I$root/include"
add_files -blackbox rtl/llmc_sparse_mac_n2m4w8l32.json
add_files -blackbox rtl/llmc_sparse_mac_n2m4w4l32.json
open_solution -reset -flow_target vitis solution
set_part xcu280-fsvh2892-2L-e
create_clock -period 4.000 -name default
csynth_design
export_design -format xo -output $root/build/vitis_hls/llmc_accel.xo
exit
