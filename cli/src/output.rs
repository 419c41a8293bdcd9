//! Where a job's output goes: stdout, or `-o FILE`, written to a temporary
//! file beside it and put in its place only once the answer has been read to
//! its end, so that a job that breaks off never leaves half a document where
//! a previous output was.

use anyhow::{bail, Context, Result};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// The output being written.
pub struct Output {
    writer: BufWriter<Box<dyn Write>>,
    /// The temporary file and the path it becomes.
    pending: Option<(NamedTempFile, PathBuf)>,
}

impl Output {
    /// Output to `path` (stdout when `None`), which must not be `input`: the
    /// job reads its input while the output is written.
    pub fn create(path: Option<&Path>, input: &Path) -> Result<Output> {
        let Some(path) = path else {
            return Ok(Output { writer: BufWriter::new(Box::new(std::io::stdout())), pending: None });
        };
        if let (Ok(a), Ok(b)) = (std::fs::metadata(path), std::fs::metadata(input)) {
            if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                bail!("the output {} is the input file", path.display());
            }
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file = NamedTempFile::new_in(dir).with_context(|| format!("cannot create a file in {}", dir.display()))?;
        let handle = file.reopen().with_context(|| format!("cannot write in {}", dir.display()))?;
        Ok(Output {
            writer: BufWriter::with_capacity(256 * 1024, Box::new(handle)),
            pending: Some((file, path.to_path_buf())),
        })
    }

    /// The output is complete: flushes it and puts the file in its place.
    pub fn finish(mut self) -> Result<()> {
        self.writer.flush().context("cannot write the output")?;
        if let Some((file, path)) = self.pending.take() {
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
