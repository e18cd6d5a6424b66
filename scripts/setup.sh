#!/usr/bin/env bash
# Creates .venv with every dependency of llmc and installs the Debian tools the RTL flow needs,
# OpenCL (the ICD loader and PoCL, which runs the TVM opencl target's kernels on the CPU), and the
# aarch64 cross compiler and user-mode QEMU that check the ARM NEON LUT kernels on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

missing=()
for tool in iverilog verilator yosys; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
command -v tclsh >/dev/null 2>&1 || missing+=(tcl)  # the hostile-name tests source the generated Tcl
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
for pkg in ocl-icd-libopencl1 pocl-opencl-icd; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "llmc setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# torch first, pinned, so that nothing pulls a CUDA build
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[all]"
touch "$VENV/.installed"
