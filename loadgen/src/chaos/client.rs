//! The KV example's line protocol (v2), client side: one connection, one
//! request at a time, every step bounded in time and bytes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Longest answer line accepted: a 4096-byte value, its prefix, slack.
pub const REPLY_BYTES_MAX: u64 = 8 * 1024;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Connecting failed: the request was never sent.
    #[error("connect to {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    /// Sent (or possibly sent), then no answer: a write may have happened.
    #[error("no answer: {0}")]
    NoAnswer(String),
}

/// One answer line, classified by what it says about the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `OK` or `OK rest`.
    Ok(Option<String>),
    /// `NONE`: the key is absent.
    Absent,
    /// `MISMATCH` (a CAS that did not apply).
    Mismatch,
    /// Not the leader; definitely not applied.
    Redirect(SocketAddr),
    /// Definitely not applied.
    Fail(String),
    /// May or may not have been applied.
    Maybe(String),
    /// Anything else: a protocol error, treated like `MAYBE` for writes.
    Unexpected(String),
}

impl Reply {
    /// Classifies one answer line.
    pub fn parse(line: &str) -> Reply {
        let line = line.trim_end();
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "OK" if rest.is_empty() => Reply::Ok(None),
            "OK" => Reply::Ok(Some(rest.to_owned())),
            "NONE" if rest.is_empty() => Reply::Absent,
            "MISMATCH" if rest.is_empty() => Reply::Mismatch,
            "REDIRECT" => match rest.parse() {
                Ok(address) => Reply::Redirect(address),
                Err(_) => Reply::Unexpected(line.to_owned()),
            },
            "FAIL" => Reply::Fail(rest.to_owned()),
            "MAYBE" => Reply::Maybe(rest.to_owned()),
            _ => Reply::Unexpected(line.to_owned()),
        }
    }
}

/// A node's `STATUS` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    /// 0 when the node knows no leader.
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Hash of the whole map, 16 hex digits.
    pub state: String,
    /// Rolling hash of every applied entry, 16 hex digits.
    pub log: String,
}

impl Status {
    /// Parses the text after `OK ` of a `STATUS` answer.
    ///
    /// # Errors
    /// A missing field or a malformed number, named.
    pub fn parse(text: &str) -> Result<Status, String> {
        let mut status = Status::default();
        let mut seen = 0u32;
        for item in text.split_whitespace() {
            let Some((name, value)) = item.split_once('=') else {
                return Err(format!("STATUS item without `=`: {item:?}"));
            };
            let number = || -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("STATUS {name}={value:?}: not a number"))
            };
            let list = || -> Result<Vec<u64>, String> {
                if value == "-" || value.is_empty() {
                    return Ok(Vec::new());
                }
                value
                    .split(',')
                    .map(|id| {
                        id.parse()
                            .map_err(|_| format!("STATUS {name}={value:?}: not a list of ids"))
                    })
                    .collect()
            };
            let bit = match name {
                "id" => {
                    status.id = number()?;
                    1
                }
                "leader" => {
                    status.leader = number()?;
                    2
                }
                "term" => {
                    status.term = number()?;
                    4
                }
                "commit" => {
                    status.commit = number()?;
                    8
                }
                "applied" => {
                    status.applied = number()?;
                    16
                }
                "voters" => {
                    status.voters = list()?;
                    32
                }
                "learners" => {
                    status.learners = list()?;
                    64
                }
                "state" => {
                    status.state = value.to_owned();
                    128
                }
                "log" => {
                    status.log = value.to_owned();
                    256
                }
                // Later protocol versions may add fields.
                _ => 0,
            };
            seen |= bit;
        }
        if seen != 511 {
            return Err(format!("STATUS lacks fields: {text:?}"));
        }
        Ok(status)
    }
}

/// One client connection to one node.
#[derive(Debug)]
pub struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

impl Connection {
    /// Connects within `timeout`.
    ///
    /// # Errors
    /// [`RequestError::Connect`] when the node does not accept in time.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is sent.
    pub async fn open(address: SocketAddr, timeout: Duration) -> Result<Connection, RequestError> {
        let connect = tokio::time::timeout(timeout, TcpStream::connect(address)).await;
        let stream = match connect {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(RequestError::Connect { address, source }),
            Err(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
                return Err(RequestError::Connect { address, source });
            }
        };
        // Requests are single small lines: send each at once.
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        Ok(Connection {
            reader: BufReader::new(read),
            writer,
            line: String::new(),
        })
    }

    /// Sends one request line and reads its answer, all within `timeout`.
    /// After an error the connection is out of step and must be dropped.
    ///
    /// # Errors
    /// [`RequestError::NoAnswer`] on a timeout, a closed connection, an
    /// over-long or non-UTF-8 answer.
    ///
    /// # Cancel safety
    /// Not cancel-safe: the request may be half sent; drop the connection.
    pub async fn request(
        &mut self,
        request: &str,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let exchange = async {
            self.writer.write_all(request.as_bytes()).await?;
            self.writer.write_all(b"\n").await?;
            self.line.clear();
            let read = (&mut self.reader)
                .take(REPLY_BYTES_MAX)
                .read_line(&mut self.line)
                .await?;
            if read == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            if !self.line.ends_with('\n') {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "answer longer than REPLY_BYTES_MAX",
                ));
            }
            Ok(Reply::parse(&self.line))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(RequestError::NoAnswer(error.to_string())),
            Err(_) => Err(RequestError::NoAnswer(format!(
                "timed out after {timeout:?}"
            ))),
        }
    }
}

/// One request on a fresh connection (control commands, `STATUS`).
///
/// # Errors
/// As [`Connection::open`] and [`Connection::request`].
///
/// # Cancel safety
/// Cancel-safe in that nothing outlives it; a write may have been sent.
pub async fn once(
    address: SocketAddr,
    request: &str,
    timeout: Duration,
) -> Result<Reply, RequestError> {
    let mut connection = Connection::open(address, timeout).await?;
    connection.request(request, timeout).await
}

/// `STATUS` of the node at `address`, or `None` when it did not answer well.
///
/// # Cancel safety
/// Cancel-safe.
pub async fn status(address: SocketAddr, timeout: Duration) -> Option<Status> {
    match once(address, "STATUS", timeout).await {
        Ok(Reply::Ok(Some(text))) => Status::parse(&text).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(Reply::parse("OK\n"), Reply::Ok(None));
        assert_eq!(Reply::parse("OK v1\n"), Reply::Ok(Some("v1".into())));
        assert_eq!(Reply::parse("NONE"), Reply::Absent);
        assert_eq!(Reply::parse("MISMATCH"), Reply::Mismatch);
        assert_eq!(
            Reply::parse("REDIRECT 127.0.0.1:80"),
            Reply::Redirect("127.0.0.1:80".parse().unwrap())
        );
        assert!(matches!(
            Reply::parse("REDIRECT nowhere"),
            Reply::Unexpected(_)
        ));
        assert_eq!(
            Reply::parse("FAIL no leader"),
            Reply::Fail("no leader".into())
        );
        assert_eq!(Reply::parse("MAYBE lost"), Reply::Maybe("lost".into()));
        assert!(matches!(Reply::parse("HELLO"), Reply::Unexpected(_)));
    }

    #[test]
    fn status_lines() {
        let status = Status::parse(
            "id=2 leader=1 term=3 commit=40 applied=39 voters=1,2,3 learners=- \
             state=00000000000000ff log=0123456789abcdef",
        )
        .unwrap();
        assert_eq!(status.id, 2);
        assert_eq!(status.leader, 1);
        assert_eq!(status.term, 3);
        assert_eq!((status.commit, status.applied), (40, 39));
        assert_eq!(status.voters, vec![1, 2, 3]);
        assert!(status.learners.is_empty());
        assert_eq!(status.log, "0123456789abcdef");
        assert!(Status::parse("id=1 leader=0")
            .unwrap_err()
            .contains("lacks"));
        assert!(Status::parse("id=x leader=0").unwrap_err().contains("id"));
    }
}
