// llmc_result_queue: the output side of llmc's streaming units. A unit accepts a group only while the
// queue can hold its result (one reservation per accepted group), so its pipeline never stalls and no
// result is lost or duplicated under back-pressure. has_room and out_valid depend on registers only.
`default_nettype none
module llmc_result_queue #(
  parameter DEPTH = 8,   // results in flight (pipeline latency + output buffering), at least 2
  parameter W = 32
) (
  input  wire         clk,
  input  wire         rst,
  input  wire         reserve,     // a group's last beat was accepted: its result will be pushed later
  output wire         has_room,    // another group may be accepted
  input  wire         push,        // a reserved result is ready
  input  wire [W-1:0] push_data,
  output wire         out_valid,
  input  wire         out_ready,
  output wire [W-1:0] out_data
);
  localparam AW = $clog2(DEPTH + 1);    // counters
  localparam PW = $clog2(DEPTH);        // pointers
  localparam [31:0] DEPTH32 = DEPTH;
  localparam [31:0] LAST32 = DEPTH - 1;
  localparam [AW-1:0] FULL = DEPTH32[AW-1:0];
  localparam [PW-1:0] LAST = LAST32[PW-1:0];

  reg [W-1:0] mem [0:DEPTH-1];
  reg [PW-1:0] wr_ptr, rd_ptr;
  reg [AW-1:0] count, reserved;
  wire pop = out_valid && out_ready;

  assign has_room = reserved != FULL;
  assign out_valid = count != {AW{1'b0}};
  assign out_data = mem[rd_ptr];

  function [PW-1:0] next(input [PW-1:0] p);
    next = p == LAST ? {PW{1'b0}} : p + 1'b1;
  endfunction

  always @(posedge clk) begin
    if (push) mem[wr_ptr] <= push_data;
    if (rst) begin
      wr_ptr <= {PW{1'b0}};
      rd_ptr <= {PW{1'b0}};
      count <= {AW{1'b0}};
      reserved <= {AW{1'b0}};
    end else begin
      if (push) wr_ptr <= next(wr_ptr);
      if (pop) rd_ptr <= next(rd_ptr);
      count <= count + {{(AW - 1){1'b0}}, push} - {{(AW - 1){1'b0}}, pop};
      reserved <= reserved + {{(AW - 1){1'b0}}, reserve} - {{(AW - 1){1'b0}}, pop};
    end
  end
endmodule
`default_nettype wire
