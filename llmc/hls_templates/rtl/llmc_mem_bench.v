// Test harness of llmc_lane_reader for the memory bench (cocotb with cocotbext-axi's AXI RAM on m_axi_*): its own
// clock (period 2), a read request delay of LATENCY cycles between the reader and the memory (the round trip to
// the first word, less the RAM model's own cycles) holding up to OUTSTANDING requests, and the XOR of every word
// the reader passed on (`checksum`).
`default_nettype none
module llmc_mem_bench #(
  parameter integer ADDR_W = 32,
  parameter integer BURST = 32,
  parameter integer OUTSTANDING = 16,
  parameter integer LATENCY = 54
) (
  input  wire              rst,
  input  wire              go,
  input  wire [ADDR_W-1:0] base,
  input  wire [ADDR_W-1:0] stride,
  input  wire [31:0]       txns,
  input  wire [15:0]       txn_words,
  output wire [0:0]        m_axi_arid,
  output wire [ADDR_W-1:0] m_axi_araddr,
  output wire [7:0]        m_axi_arlen,
  output wire [2:0]        m_axi_arsize,
  output wire [1:0]        m_axi_arburst,
  output wire              m_axi_arvalid,
  input  wire              m_axi_arready,
  /* verilator lint_off UNUSEDSIGNAL */
  input  wire [0:0]        m_axi_rid,  // one ID: the reader keeps the order
  input  wire [1:0]        m_axi_rresp,  // the RAM model always answers OKAY
  /* verilator lint_on UNUSEDSIGNAL */
  input  wire [511:0]      m_axi_rdata,
  input  wire              m_axi_rlast,
  input  wire              m_axi_rvalid,
  output wire              m_axi_rready,
  output wire              done,
  output wire [31:0]       words,
  output wire [31:0]       cycles,
  output reg  [511:0]      checksum
);
  reg clk = 1'b0;
  always #1 clk <= !clk;

  wire [ADDR_W-1:0] ar_addr;
  wire [7:0] ar_len;
  wire ar_valid, ar_ready;
  wire [511:0] out_data;
  wire out_valid;

  llmc_lane_reader #(.ADDR_W(ADDR_W), .BURST(BURST), .OUTSTANDING(OUTSTANDING)) reader (
    .clk(clk), .rst(rst), .go(go), .base(base), .stride(stride), .txns(txns), .txn_words(txn_words),
    .m_axi_araddr(ar_addr), .m_axi_arlen(ar_len), .m_axi_arsize(m_axi_arsize), .m_axi_arburst(m_axi_arburst),
    .m_axi_arvalid(ar_valid), .m_axi_arready(ar_ready), .m_axi_rdata(m_axi_rdata), .m_axi_rlast(m_axi_rlast),
    .m_axi_rvalid(m_axi_rvalid), .m_axi_rready(m_axi_rready), .out_data(out_data), .out_valid(out_valid),
    .done(done), .words(words), .cycles(cycles));

  llmc_ar_delay #(.ADDR_W(ADDR_W), .OUTSTANDING(OUTSTANDING), .LATENCY(LATENCY)) delay (
    .clk(clk), .rst(rst), .s_addr(ar_addr), .s_len(ar_len), .s_valid(ar_valid), .s_ready(ar_ready),
    .m_addr(m_axi_araddr), .m_len(m_axi_arlen), .m_valid(m_axi_arvalid), .m_ready(m_axi_arready));
  assign m_axi_arid = 1'b0;

  always @(posedge clk) begin
    if (rst) checksum <= 0;
    else if (out_valid) checksum <= checksum ^ out_data;
  end
endmodule
`default_nettype wire
