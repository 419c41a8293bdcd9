//! Where a job's output goes: stdout, or `-o FILE`.
//!
//! A regular file (or a new one) is written to a temporary file beside it and
//! put in its place only once the answer has been read to its end, so that a
//! job that breaks off never leaves half a document where a previous output
//! was; a signal removes the temporary file. Anything else (`/dev/null`, a
//! pipe) is written directly. A link is followed, so its target is replaced.

use crate::signals;
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, Permissions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// The output being written.
pub struct Output {
    writer: BufWriter<Box<dyn Write>>,
    /// The temporary file, the path it becomes, and its removal on a signal.
    pending: Option<(NamedTempFile, PathBuf, signals::Guard)>,
    /// Whether it is written to the terminal (stdout, where a progress bar on stderr would draw over it).
    terminal: bool,
}

impl Output {
    /// Whether the output goes to the terminal: no progress bar may draw over it.
    pub fn on_terminal(&self) -> bool {
        self.terminal
    }

    /// Output to `path` (stdout when `None`), which must not be `input`: the
    /// job reads its input while the output is written.
    pub fn create(path: Option<&Path>, input: &Path) -> Result<Output> {
        let Some(path) = path else {
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
            return Ok(Output { writer: BufWriter::new(Box::new(std::io::stdout())), pending: None, terminal });
        };
        let existing = std::fs::metadata(path).ok();
        if let (Some(a), Ok(b)) = (&existing, std::fs::metadata(input)) {
            if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                bail!("the output {} is the input file", path.display());
            }
        }
        if existing.as_ref().is_some_and(|m| !m.is_file()) {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            return Ok(Output { writer: BufWriter::new(Box::new(file)), pending: None, terminal: false });
        }
        let target = match &existing {
            Some(_) => path.canonicalize().with_context(|| format!("cannot resolve {}", path.display()))?,
            None => path.to_path_buf(),
        };
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // A new file gets the usual permissions (umask applies at creation); a replaced one keeps its own.
        let mode = existing.as_ref().map_or(0o666, |m| m.mode() & 0o7777);
        let file = tempfile::Builder::new()
            .prefix(".fanout-")
            .suffix(".tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        if existing.is_some() {
            file.as_file().set_permissions(Permissions::from_mode(mode))?;
        }
        let handle: File = file.reopen().with_context(|| format!("cannot write in {}", dir.display()))?;
        let temporary = file.path().to_path_buf();
        let on_signal = signals::on_signal(move || drop(std::fs::remove_file(temporary)));
        Ok(Output {
            writer: BufWriter::with_capacity(256 * 1024, Box::new(handle)),
            pending: Some((file, target, on_signal)),
            terminal: false,
        })
    }

    /// The output is complete: flushes it and puts the file in its place.
    pub fn finish(mut self) -> Result<()> {
        self.writer.flush().context("cannot write the output")?;
        if let Some((file, path, _on_signal)) = self.pending.take() {
            file.persist(&path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}
