# tiny-lut: C synthesis of llmc_accel with classic Vitis HLS: vitis_hls -f run_hls.tcl
cd [file dirname [file normalize [info script]]]
set root [pwd]
open_project -reset build/vitis_hls
set_top llmc_accel
add_files kernel/llmc_accel.cpp -cflags "-I$root/include"
add_files -blackbox rtl/llmc_lut_mac_g4b2l32z.json
open_solution -reset -flow_target vitis solution
set_part xcu280-fsvh2892-2L-e
create_clock -period 4.000 -name default
csynth_design
export_design -format xo -output $root/build/vitis_hls/llmc_accel.xo
exit
