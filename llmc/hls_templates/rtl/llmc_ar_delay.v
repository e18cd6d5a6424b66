// The memory's round trip as a delay on the AXI4 read address channel, for the benches that put cocotbext-axi's
// AXI RAM behind a read master: each request taken from the master (`s_*`) is offered to the memory (`m_*`) no
// sooner than LATENCY cycles later, in order. It holds up to 2^ceil(log2(OUTSTANDING + 1)) requests, every one
// a master with OUTSTANDING bursts in flight can have issued, and takes a request on the cycle it is offered.
`default_nettype none
module llmc_ar_delay #(
  parameter integer ADDR_W = 32,
  parameter integer OUTSTANDING = 16,
  parameter integer LATENCY = 54
) (
  input  wire              clk,
  input  wire              rst,
  input  wire [ADDR_W-1:0] s_addr,
  input  wire [7:0]        s_len,
  input  wire              s_valid,
  output wire              s_ready,
  output wire [ADDR_W-1:0] m_addr,
  output wire [7:0]        m_len,
  output wire              m_valid,
  input  wire              m_ready
);
  localparam integer IW = $clog2(OUTSTANDING + 1);
  reg [ADDR_W-1:0] q_addr [0:(1 << IW) - 1];
  reg [7:0] q_len [0:(1 << IW) - 1];
  reg [31:0] q_at [0:(1 << IW) - 1];
  reg [IW-1:0] head, tail;
  reg [IW:0] count;
  reg [31:0] now;
  wire pop = m_valid && m_ready;
  wire push = s_valid && s_ready;

  assign s_ready = !count[IW];
  assign m_addr = q_addr[head];
  assign m_len = q_len[head];
  assign m_valid = count != 0 && now >= q_at[head];

  always @(posedge clk) begin
    if (rst) begin
      head <= 0;
      tail <= 0;
      count <= 0;
      now <= 0;
    end else begin
      now <= now + 32'd1;
      if (push) begin
        q_addr[tail] <= s_addr;
        q_len[tail] <= s_len;
        q_at[tail] <= now + LATENCY;
        tail <= tail + 1'b1;
      end
      if (pop) head <= head + 1'b1;
      count <= count + {{IW{1'b0}}, push} - {{IW{1'b0}}, pop};
    end
  end
endmodule
`default_nettype wire
