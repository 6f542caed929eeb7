//! Every `unsafe` block of the crate: aligned buffers for O_DIRECT, the
//! io_uring submission of linked write→fdatasync chains, and an eventfd that
//! wakes the log thread while it waits in the ring.

use std::alloc::Layout;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use io_uring::{opcode, squeue, types, IoUring};

/// Alignment of [`AlignedBuf`] (O_DIRECT needs the logical block size; 4096
/// covers every common device).
pub const ALIGN_BYTES: usize = 4096;

/// A heap buffer aligned to [`ALIGN_BYTES`] with a fixed capacity.
pub struct AlignedBuf {
    pointer: std::ptr::NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the buffer owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reading, like &[u8].
unsafe impl Sync for AlignedBuf {}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl AlignedBuf {
    /// A zeroed buffer of `capacity` bytes rounded up to [`ALIGN_BYTES`].
    ///
    /// # Panics
    /// If the allocation fails (out of memory) or capacity overflows.
    pub fn new(capacity: usize) -> AlignedBuf {
        let capacity = capacity.max(ALIGN_BYTES).div_ceil(ALIGN_BYTES) * ALIGN_BYTES;
        let layout = Layout::from_size_align(capacity, ALIGN_BYTES).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(pointer) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf {
            pointer,
            len: 0,
            capacity,
        }
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Fixed capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length to zero (contents are overwritten before use).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Extends by `bytes` zero bytes and returns the new region.
    ///
    /// # Panics
    /// If the capacity would be exceeded (a caller bug: the writer checks
    /// sizes against the capacity first).
    pub fn extend_zeroed(&mut self, bytes: usize) -> &mut [u8] {
        let start = self.len;
        let end = start + bytes;
        assert!(
            end <= self.capacity,
            "aligned buffer overflow: {end} > {}",
            self.capacity
        );
        self.len = end;
        let region = &mut self.as_mut_slice()[start..end];
        region.fill(0);
        region
    }

    /// Appends `bytes`.
    ///
    /// # Panics
    /// As [`AlignedBuf::extend_zeroed`].
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let start = self.len;
        let end = start + bytes.len();
        assert!(
            end <= self.capacity,
            "aligned buffer overflow: {end} > {}",
            self.capacity
        );
        self.len = end;
        self.as_mut_slice()[start..end].copy_from_slice(bytes);
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: pointer is valid for capacity >= len initialised bytes
        // (allocated zeroed), and &self forbids concurrent mutation.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.len) }
    }

    /// The bytes in use, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.capacity, ALIGN_BYTES).expect("buffer layout");
        // SAFETY: allocated in new() with this exact layout, freed once.
        unsafe { std::alloc::dealloc(self.pointer.as_ptr(), layout) }
    }
}

/// A non-blocking eventfd used to wake the log thread.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates the eventfd.
    ///
    /// # Errors
    /// The OS error from `eventfd(2)`.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Adds one to the counter, waking a pending read.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our descriptor. A failure
        // (counter overflow) still leaves the eventfd readable, which is all
        // a wake needs.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Opens `path` for O_DIRECT writes.
///
/// # Errors
/// The OS error (EINVAL if the file system refuses O_DIRECT).
pub fn open_direct(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

const EVENT_TOKEN: u64 = u64::MAX;

/// One write→fdatasync chain in flight.
#[derive(Debug)]
struct Chain {
    buf: AlignedBuf,
    write_result: Option<i32>,
    sync_result: Option<i32>,
    started: std::time::Instant,
}

/// A finished chain: its buffer back, and the outcome.
#[derive(Debug)]
pub struct ChainDone {
    /// Caller's token.
    pub token: u64,
    /// The buffer that was written.
    pub buf: AlignedBuf,
    /// Ok, or the first error (a short write is `WriteZero`).
    pub result: io::Result<()>,
    /// Time from submission to the sync completing.
    pub elapsed: std::time::Duration,
}

/// An io_uring that runs linked write→fdatasync chains on O_DIRECT files
/// and owns each chain's buffer until the kernel is done with it.
pub struct Ring {
    ring: IoUring,
    chains: HashMap<u64, Chain>,
    event_buffer: Box<[u8; 8]>,
    event_armed: bool,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Ring")
            .field("chains", &self.chains.len())
            .finish()
    }
}

impl Ring {
    /// Sets up a ring with room for `entries` submissions.
    ///
    /// # Errors
    /// The OS error (EPERM/ENOSYS where io_uring is blocked).
    pub fn new(entries: u32) -> io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::new(entries)?,
            chains: HashMap::new(),
            event_buffer: Box::new([0; 8]),
            event_armed: false,
        })
    }

    /// Chains in flight.
    pub fn inflight(&self) -> usize {
        self.chains.len()
    }

    /// Queues a write of `buf` at `offset` of `file`, linked to an
    /// fdatasync of the same file, and submits it.
    ///
    /// The caller keeps `file` open until the chain completes.
    ///
    /// # Errors
    /// Submission failed; the buffer is handed back.
    pub fn submit_chain(
        &mut self,
        file: &File,
        offset: u64,
        buf: AlignedBuf,
        token: u64,
        sync: bool,
    ) -> Result<(), (io::Error, AlignedBuf)> {
        let Ok(len) = u32::try_from(buf.len()) else {
            return Err((io::Error::other("write larger than 4 GiB"), buf));
        };
        let fd = types::Fd(file.as_raw_fd());
        let write = opcode::Write::new(fd, buf.as_slice().as_ptr(), len)
            .offset(offset)
            .build()
            .user_data(token << 1);
        let write = if sync {
            write.flags(squeue::Flags::IO_LINK)
        } else {
            write
        };
        let fsync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data((token << 1) | 1);
        {
            let mut queue = self.ring.submission();
            // SAFETY: the buffer is moved into self.chains below and is only
            // dropped after both completions are reaped (or the ring is
            // dropped, which waits: see Drop); the fd outlives the chain by
            // the caller's contract.
            let pushed = unsafe {
                if sync {
                    queue.push_multiple(&[write, fsync])
                } else {
                    queue.push(&write)
                }
            };
            if pushed.is_err() {
                return Err((io::Error::other("io_uring submission queue full"), buf));
            }
        }
        self.chains.insert(
            token,
            Chain {
                buf,
                write_result: None,
                sync_result: if sync { None } else { Some(0) },
                started: std::time::Instant::now(),
            },
        );
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(error) => {
                // The entries may or may not have reached the kernel: keep
                // the buffer owned until completion; report the error.
                Err((error, AlignedBuf::new(0)))
            }
        }
    }

    /// Arms a read of `event` so a signal wakes [`Ring::wait`].
    ///
    /// # Errors
    /// The submission queue is full.
    pub fn arm_event(&mut self, event: &EventFd) -> io::Result<()> {
        if self.event_armed {
            return Ok(());
        }
        let read = opcode::Read::new(types::Fd(event.raw()), self.event_buffer.as_mut_ptr(), 8)
            .build()
            .user_data(EVENT_TOKEN);
        // SAFETY: event_buffer is boxed and lives as long as the ring; the
        // eventfd outlives the ring (both are owned by the log thread, which
        // drops the ring first).
        unsafe { self.ring.submission().push(&read) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.event_armed = true;
        Ok(())
    }

    /// Waits for at least one completion (`block`) or none, and returns the
    /// chains that finished. An eventfd completion just disarms the event.
    ///
    /// # Errors
    /// The OS error from `io_uring_enter`.
    pub fn reap(&mut self, block: bool, done: &mut Vec<ChainDone>) -> io::Result<()> {
        if block {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => {}
                Err(error) => return Err(error),
            }
        }
        let completions: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|entry| (entry.user_data(), entry.result()))
            .collect();
        for (user_data, result) in completions {
            if user_data == EVENT_TOKEN {
                self.event_armed = false;
                continue;
            }
            let token = user_data >> 1;
            let Some(chain) = self.chains.get_mut(&token) else {
                continue;
            };
            if user_data & 1 == 0 {
                chain.write_result = Some(result);
            } else {
                chain.sync_result = Some(result);
            }
            if let (Some(write), Some(sync)) = (chain.write_result, chain.sync_result) {
                // unwrap: the entry was found just above.
                let chain = self.chains.remove(&token).expect("chain present");
                let result = if write < 0 {
                    Err(io::Error::from_raw_os_error(-write))
                } else if write as usize != chain.buf.len() {
                    Err(io::Error::new(io::ErrorKind::WriteZero, "short write"))
                } else if sync < 0 {
                    Err(io::Error::from_raw_os_error(-sync))
                } else {
                    Ok(())
                };
                done.push(ChainDone {
                    token,
                    elapsed: chain.started.elapsed(),
                    buf: chain.buf,
                    result,
                });
            }
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Buffers must outlive the kernel's use of them: wait for every chain
        // (bounded: each completes or fails with the device).
        let mut done = Vec::new();
        let mut rounds = 0;
        while !self.chains.is_empty() && rounds < 10_000 {
            if self.reap(true, &mut done).is_err() {
                break;
            }
            rounds += 1;
        }
        if !self.chains.is_empty() {
            // Never free memory the kernel may still write from.
            for (_, chain) in self.chains.drain() {
                std::mem::forget(chain.buf);
            }
        }
    }
}
