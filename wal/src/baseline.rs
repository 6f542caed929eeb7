//! Raw io_uring baseline: O_DIRECT write + fdatasync loop (filled below).
