//! The capture's writer thread: appends lines, rotates by size, keeps a bounded number of
//! files, and turns every I/O failure into a counted, logged drop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;

use super::{CaptureCounters, DropLog, Outcome};
use crate::config::CaptureConfig;

/// The file being written and where rotation puts the older ones.
struct Files {
    path: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    current: Option<(File, u64)>,
}

/// Starts the thread; it ends when every sender is gone.
pub(super) fn spawn(config: &CaptureConfig, lines: Receiver<Vec<u8>>, counters: CaptureCounters) {
    let mut files = Files {
        path: config.path.clone(),
        max_file_bytes: config.max_file_bytes,
        max_files: config.max_files,
        current: None,
    };
    let failures = DropLog::new("capture file not writable: lines dropped");
    let started = std::thread::Builder::new()
        .name("capture-writer".into())
        .spawn(move || {
            for line in lines {
                match files.write(&line) {
                    Ok(()) => counters.count(Outcome::Written),
                    Err(err) => {
                        // Reopened at the next line: the disk may have room again.
                        files.current = None;
                        counters.count(Outcome::WriteFailed);
                        failures.dropped(Some(&err));
                    }
                }
            }
        });
    if let Err(err) = started {
        tracing::error!(error = %err, "cannot start the capture writer; nothing is captured");
    }
}

// === impl Files ===

impl Files {
    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        if let Some((_, size)) = &self.current {
            if *size > 0 && size + len > self.max_file_bytes {
                self.current = None;
                self.rotate()?;
            }
        }
        let (file, size) = match &mut self.current {
            Some(current) => current,
            None => {
                let file = open(&self.path)?;
                let size = file.metadata()?.len();
                if size > 0 && size + len > self.max_file_bytes {
                    drop(file);
                    self.rotate()?;
                    self.current.insert((open(&self.path)?, 0))
                } else {
                    self.current.insert((file, size))
                }
            }
        };
        file.write_all(line)?;
        *size += len;
        Ok(())
    }

    /// `<path>.(n-1)` is dropped, each `<path>.i` becomes `<path>.(i+1)`, `<path>` becomes `<path>.1`.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |i: usize| -> PathBuf {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        if self.max_files <= 1 {
            return remove_if_there(&self.path);
        }
        remove_if_there(&numbered(self.max_files - 1))?;
        for i in (1..self.max_files - 1).rev() {
            rename_if_there(&numbered(i), &numbered(i + 1))?;
        }
        rename_if_there(&self.path, &numbered(1))
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

fn rename_if_there(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}
