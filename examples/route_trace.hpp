// moe-route's trace and placement mode (examples/route_trace.cpp).
#pragma once

/// Runs moe-route with --trace, --loads or --synthetic-trace; returns the exit status.
int route_trace_main(int argc, char** argv);

/// Fails with [moe.cli.memory] when `bytes` exceed this machine's physical memory.
void check_memory(const char* what, double bytes);
