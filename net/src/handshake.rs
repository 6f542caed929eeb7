//! The handshake frame that opens every connection, and the reason codes a
//! connection is closed with.
//!
//! # Exchange
//!
//! The dialer opens the connection's only bidirectional stream and sends a
//! [`FrameKind::Handshake`](crate::FrameKind::Handshake) frame whose body is a
//! [`Hello`]; the acceptor checks it (and that the dialer's certificate names
//! the claimed sender), replies with its own `Hello` and only then hands the
//! connection to the peer's driver. The dialer checks the reply the same way.
//! Any mismatch closes the connection with a [`CloseReason`] before a single
//! data frame is read, so the caller never sees a byte from an unverified
//! peer.
//!
//! # Hello body layout (30 bytes, little endian)
//!
//! | offset | size | field            |
//! |-------:|-----:|------------------|
//! | 0      | 4    | magic `b"BRGE"`  |
//! | 4      | 2    | protocol version |
//! | 6      | 8    | cluster id       |
//! | 14     | 8    | sender node id   |
//! | 22     | 8    | receiver node id |

use crate::config::{ClusterId, PeerId};

/// Size of an encoded [`Hello`].
pub const HELLO_BYTES: usize = 30;

const MAGIC: [u8; 4] = *b"BRGE";

/// The handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the sender.
    pub protocol_version: u16,
    /// Cluster of the sender.
    pub cluster: ClusterId,
    /// Who sends this hello.
    pub sender: PeerId,
    /// Who the sender believes it is talking to.
    pub receiver: PeerId,
}

impl Hello {
    /// Encodes the hello body.
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut out = [0u8; HELLO_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.protocol_version.to_le_bytes());
        out[6..14].copy_from_slice(&self.cluster.0.to_le_bytes());
        out[14..22].copy_from_slice(&self.sender.0.to_le_bytes());
        out[22..30].copy_from_slice(&self.receiver.0.to_le_bytes());
        out
    }

    /// Decodes a hello body.
    ///
    /// # Errors
    /// [`HandshakeError::Malformed`] for a wrong length or magic.
    pub fn decode(body: &[u8]) -> Result<Hello, HandshakeError> {
        let bytes: &[u8; HELLO_BYTES] = body
            .try_into()
            .map_err(|_| HandshakeError::Malformed(format!("{} bytes", body.len())))?;
        if bytes[0..4] != MAGIC {
            return Err(HandshakeError::Malformed("bad magic".to_owned()));
        }
        let u64_at = |offset: usize| {
            let mut field = [0u8; 8];
            field.copy_from_slice(&bytes[offset..offset + 8]);
            u64::from_le_bytes(field)
        };
        Ok(Hello {
            protocol_version: u16::from_le_bytes([bytes[4], bytes[5]]),
            cluster: ClusterId(u64_at(6)),
            sender: PeerId(u64_at(14)),
            receiver: PeerId(u64_at(22)),
        })
    }

    /// Checks a received hello against what this node expects: its protocol
    /// version and cluster, itself as receiver, and `sender` as sender.
    ///
    /// # Errors
    /// The first mismatch found, as a [`HandshakeError`].
    pub fn check(
        &self,
        protocol_version: u16,
        cluster: ClusterId,
        me: PeerId,
        sender: PeerId,
    ) -> Result<(), HandshakeError> {
        if self.protocol_version != protocol_version {
            return Err(HandshakeError::Version {
                ours: protocol_version,
                theirs: self.protocol_version,
            });
        }
        if self.cluster != cluster {
            return Err(HandshakeError::Cluster {
                ours: cluster,
                theirs: self.cluster,
            });
        }
        if self.receiver != me || self.sender != sender {
            return Err(HandshakeError::Node {
                expected_sender: sender,
                sender: self.sender,
                receiver: self.receiver,
            });
        }
        Ok(())
    }
}

/// Why a handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not a hello at all.
    #[error("malformed hello: {0}")]
    Malformed(String),
    /// Protocol versions differ.
    #[error("protocol version {theirs} offered, {ours} spoken here")]
    Version {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// Clusters differ.
    #[error("cluster {theirs} offered, this node belongs to {ours}")]
    Cluster {
        /// Ours.
        ours: ClusterId,
        /// Theirs.
        theirs: ClusterId,
    },
    /// The peer is not who we expected, or does not address us.
    #[error("hello from {sender} to {receiver}, expected one from {expected_sender} to us")]
    Node {
        /// The sender we expected.
        expected_sender: PeerId,
        /// The sender named in the hello.
        sender: PeerId,
        /// The receiver named in the hello.
        receiver: PeerId,
    },
    /// The sender is not a member this node knows.
    #[error("node {0} is not a configured peer")]
    UnknownPeer(PeerId),
    /// The certificate does not name the claimed sender.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The handshake did not complete in time.
    #[error("handshake timed out")]
    Timeout,
    /// The connection or stream failed during the handshake (not the peer's
    /// fault as far as we can tell).
    #[error("connection failed during handshake: {0}")]
    Connection(String),
}

impl HandshakeError {
    /// The reason code the connection is closed with.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            HandshakeError::Malformed(_) => CloseReason::HandshakeMalformed,
            HandshakeError::Version { .. } => CloseReason::VersionMismatch,
            HandshakeError::Cluster { .. } => CloseReason::ClusterMismatch,
            HandshakeError::Node { .. }
            | HandshakeError::UnknownPeer(_)
            | HandshakeError::Certificate(_) => CloseReason::NodeMismatch,
            HandshakeError::Timeout | HandshakeError::Connection(_) => {
                CloseReason::HandshakeTimeout
            }
        }
    }
}

/// The application error code a connection is closed with (QUIC
/// `CONNECTION_CLOSE`), also sent as a short text reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Orderly shutdown of the endpoint.
    Shutdown = 0,
    /// A second connection between the same pair replaced this one (see
    /// the duplicate rule in the `quic` module docs).
    Duplicate = 1,
    /// The hello names another cluster.
    ClusterMismatch = 2,
    /// The hello (or certificate) names an unexpected sender or receiver.
    NodeMismatch = 3,
    /// The hello names another protocol version.
    VersionMismatch = 4,
    /// The hello does not parse.
    HandshakeMalformed = 5,
    /// A malformed data frame (see [`crate::FrameError`]).
    Frame = 6,
    /// A stream the protocol does not allow (for example a second control
    /// stream, or too many snapshot streams).
    Stream = 7,
    /// The handshake did not finish in time.
    HandshakeTimeout = 8,
}

impl CloseReason {
    /// The QUIC application error code.
    pub fn code(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The reason for a received code, `None` if unknown.
    pub fn from_code(code: u64) -> Option<CloseReason> {
        Some(match code {
            0 => CloseReason::Shutdown,
            1 => CloseReason::Duplicate,
            2 => CloseReason::ClusterMismatch,
            3 => CloseReason::NodeMismatch,
            4 => CloseReason::VersionMismatch,
            5 => CloseReason::HandshakeMalformed,
            6 => CloseReason::Frame,
            7 => CloseReason::Stream,
            8 => CloseReason::HandshakeTimeout,
            _ => return None,
        })
    }

    /// Short text sent with the code.
    pub fn text(self) -> &'static [u8] {
        match self {
            CloseReason::Shutdown => b"shutdown",
            CloseReason::Duplicate => b"duplicate connection",
            CloseReason::ClusterMismatch => b"cluster mismatch",
            CloseReason::NodeMismatch => b"node mismatch",
            CloseReason::VersionMismatch => b"protocol version mismatch",
            CloseReason::HandshakeMalformed => b"malformed handshake",
            CloseReason::Frame => b"malformed frame",
            CloseReason::Stream => b"protocol violation on streams",
            CloseReason::HandshakeTimeout => b"handshake timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            protocol_version: 1,
            cluster: ClusterId(9),
            sender: PeerId(1),
            receiver: PeerId(2),
        }
    }

    #[test]
    fn hello_round_trips_and_checks() {
        let decoded = Hello::decode(&hello().encode()).expect("decode");
        assert_eq!(decoded, hello());
        assert_eq!(decoded.check(1, ClusterId(9), PeerId(2), PeerId(1)), Ok(()));
    }

    #[test]
    fn every_mismatch_has_its_reason() {
        let hello = hello();
        let reason = |result: Result<(), HandshakeError>| result.map_err(|e| e.close_reason());
        assert_eq!(
            reason(hello.check(2, ClusterId(9), PeerId(2), PeerId(1))),
            Err(CloseReason::VersionMismatch)
        );
        assert_eq!(
            reason(hello.check(1, ClusterId(8), PeerId(2), PeerId(1))),
            Err(CloseReason::ClusterMismatch)
        );
        assert_eq!(
            reason(hello.check(1, ClusterId(9), PeerId(3), PeerId(1))),
            Err(CloseReason::NodeMismatch)
        );
        assert_eq!(
            reason(hello.check(1, ClusterId(9), PeerId(2), PeerId(4))),
            Err(CloseReason::NodeMismatch)
        );
    }

    #[test]
    fn malformed_hellos_are_rejected() {
        assert!(Hello::decode(&[0u8; 29]).is_err());
        let mut bad = hello().encode();
        bad[0] = b'X';
        assert!(Hello::decode(&bad).is_err());
    }

    #[test]
    fn codes_round_trip() {
        for code in 0..9 {
            let reason = CloseReason::from_code(code).expect("known code");
            assert_eq!(reason.code().into_inner(), code);
        }
        assert_eq!(CloseReason::from_code(99), None);
    }
}
