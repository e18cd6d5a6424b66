// A matrix lane's weight loader on its AXI4 read port: `txns` transactions of `txn_words` 512-bit words, the
// i-th at base + i * stride (whole words), each cut into bursts of at most BURST beats that do not cross a 4 KiB
// boundary (AXI4's rule, which an HLS m_axi adapter keeps too), with at most OUTSTANDING bursts in flight (the
// kernel's m_axi settings). Every word is passed on (`out_data`, `out_valid`) the cycle it arrives
// (the lane's FIFO never fills: the MAC array consumes a word a cycle). `cycles` counts from `go` to the last word.
`default_nettype none
module llmc_lane_reader #(
  parameter integer ADDR_W = 32,
  parameter integer BURST = 32,
  parameter integer OUTSTANDING = 16
) (
  input  wire              clk,
  input  wire              rst,
  input  wire              go,
  input  wire [ADDR_W-1:0] base,
  input  wire [ADDR_W-1:0] stride,
  input  wire [31:0]       txns,
  input  wire [15:0]       txn_words,
  output reg  [ADDR_W-1:0] m_axi_araddr,
  output reg  [7:0]        m_axi_arlen,
  output wire [2:0]        m_axi_arsize,
  output wire [1:0]        m_axi_arburst,
  output reg               m_axi_arvalid,
  input  wire              m_axi_arready,
  input  wire [511:0]      m_axi_rdata,
  input  wire              m_axi_rlast,
  input  wire              m_axi_rvalid,
  output wire              m_axi_rready,
  output wire [511:0]      out_data,
  output wire              out_valid,
  output reg               done,
  output reg  [31:0]       words,
  output reg  [31:0]       cycles
);
  assign m_axi_arsize = 3'd6;  // 64 bytes a beat
  assign m_axi_arburst = 2'b01;  // INCR
  assign m_axi_rready = 1'b1;
  assign out_data = m_axi_rdata;
  assign out_valid = m_axi_rvalid;

  reg running;
  reg [31:0] txn;  // the transaction being issued
  reg [31:0] offset;  // its next word
  reg [31:0] in_flight;  // bursts issued whose last beat has not arrived
  wire [31:0] left = {16'd0, txn_words} - offset;
  wire [ADDR_W-1:0] next_addr = base + txn[ADDR_W-1:0] * stride + offset[ADDR_W-1:0] * 64;
  // words to the next 4 KiB boundary, which an AXI burst must not cross (1 to 64: the addresses are whole words)
  wire [6:0] page_words = 7'd64 - {1'b0, next_addr[11:6]};
  wire [31:0] to_page = {25'd0, page_words};
  wire [31:0] fits = left < to_page ? left : to_page;
  wire [31:0] beats = fits > BURST ? BURST : fits;
  wire [7:0] arlen_next = beats[7:0] - 8'd1;  // beats <= BURST <= 256
  wire issuing = running && txn < txns;
  wire took_ar = m_axi_arvalid && m_axi_arready;
  wire last_beat = m_axi_rvalid && m_axi_rlast;
  // bursts in flight after this edge, counting the one on the address channel once it is taken
  wire [31:0] after = in_flight + {31'd0, took_ar} - {31'd0, last_beat};
  wire [31:0] total = txns * {16'd0, txn_words};

  always @(posedge clk) begin
    if (rst) begin
      running <= 1'b0;
      done <= 1'b0;
      m_axi_arvalid <= 1'b0;
      txn <= 0;
      offset <= 0;
      in_flight <= 0;
      words <= 0;
      cycles <= 0;
    end else begin
      if (go && !running && !done) running <= 1'b1;
      if (running && !done) cycles <= cycles + 32'd1;
      if (m_axi_rvalid) words <= words + 32'd1;
      if (running && total == words + {31'd0, m_axi_rvalid}) begin
        running <= 1'b0;
        done <= 1'b1;
      end
      in_flight <= after;
      if (took_ar || !m_axi_arvalid) begin
        if (issuing && after < OUTSTANDING) begin
          m_axi_araddr <= next_addr;
          m_axi_arlen <= arlen_next;
          m_axi_arvalid <= 1'b1;
          if (offset + beats == {16'd0, txn_words}) begin
            txn <= txn + 32'd1;
            offset <= 0;
          end else begin
            offset <= offset + beats;
          end
        end else begin
          m_axi_arvalid <= 1'b0;
        end
      end
    end
  end
endmodule
`default_nettype wire
