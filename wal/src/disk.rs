//! The file-system operations the log needs, behind one trait, so the same
//! log code runs on a real directory and on the fault-injecting
//! [`crate::FaultDisk`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{FaultOperation, Faults, WalError};

/// Synchronous file operations on one directory, by file name.
///
/// `read_at` must fill the whole buffer or fail. Implementations are
/// internally synchronised: the log thread, the segment-preparation thread
/// and readers call them concurrently.
pub(crate) trait Disk: Send + Sync + std::fmt::Debug {
    fn list(&self) -> io::Result<Vec<String>>;
    fn create(&self, name: &str) -> io::Result<()>;
    fn len(&self, name: &str) -> io::Result<u64>;
    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;
    fn sync(&self, name: &str) -> io::Result<()>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    fn sync_dir(&self) -> io::Result<()>;
    /// Path used in error messages.
    fn path(&self, name: &str) -> PathBuf;
    /// The real directory, when there is one (io_uring opens files itself).
    fn os_dir(&self) -> Option<&Path>;
}

/// Wraps an `io::Result` from `disk` into a [`WalError`] naming the file.
pub(crate) fn context<T>(
    disk: &dyn Disk,
    name: &str,
    result: io::Result<T>,
) -> Result<T, WalError> {
    result.map_err(|source| WalError::io(disk.path(name), source))
}

/// A real directory: buffered `pread`/`pwrite` and `fdatasync`, failing
/// them as `faults` say ([`crate::Backend::FaultyBlocking`]).
#[derive(Debug)]
pub(crate) struct OsDisk {
    dir: PathBuf,
    /// Open files by name, so the hot path does not reopen them.
    files: Mutex<HashMap<String, Arc<File>>>,
    /// Armed faults; `None` costs the hot path nothing.
    faults: Option<Faults>,
}

impl OsDisk {
    pub(crate) fn open(dir: &Path, faults: Option<Faults>) -> Result<OsDisk, WalError> {
        std::fs::create_dir_all(dir).map_err(|source| WalError::io(dir, source))?;
        Ok(OsDisk {
            dir: dir.to_path_buf(),
            files: Mutex::new(HashMap::new()),
            faults,
        })
    }

    fn check(&self, operation: FaultOperation) -> io::Result<()> {
        self.faults
            .as_ref()
            .map_or(Ok(()), |faults| faults.check(operation))
    }

    fn file(&self, name: &str) -> io::Result<Arc<File>> {
        let mut files = self.files.lock();
        if let Some(file) = files.get(name) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.dir.join(name))?,
        );
        files.insert(name.to_owned(), Arc::clone(&file));
        Ok(file)
    }
}

impl Disk for OsDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(name))?;
        self.files.lock().insert(name.to_owned(), Arc::new(file));
        Ok(())
    }

    fn len(&self, name: &str) -> io::Result<u64> {
        Ok(self.file(name)?.metadata()?.len())
    }

    fn read_at(&self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(FaultOperation::Read)?;
        self.file(name)?.read_exact_at(buf, offset)
    }

    fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(FaultOperation::Write)?;
        self.file(name)?.write_all_at(data, offset)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.check(FaultOperation::Sync)?;
        self.file(name)?.sync_data()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))?;
        let mut files = self.files.lock();
        if let Some(file) = files.remove(from) {
            files.insert(to.to_owned(), file);
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files.lock().remove(name);
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn os_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}
