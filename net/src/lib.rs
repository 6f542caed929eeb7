//! `barge-net`: authenticated, bounded, length-prefixed frames between nodes
//! over QUIC, by traffic class. It never interprets a frame's body.
