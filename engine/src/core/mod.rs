//! The Raft core: a deterministic state machine with no I/O, no clock and no
//! global randomness. Inputs go in through `handle_*`, outputs come out as
//! typed actions.
