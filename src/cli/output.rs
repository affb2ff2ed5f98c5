//! Files the command line writes (`--ready-file`, `--histogram`, `--plot`, `--hlog`),
//! made so that nobody else can aim them: each is written to a temporary file of a random
//! name created afresh in the target's folder (`O_EXCL`: never an existing file, never
//! through a link; mode 0666 less the umask, as `File::create` gives), then renamed into
//! place, which replaces a link planted at the name rather than following it. A reader
//! never sees half a file.
//!
//! Promise: [`Output::create`] fails at once (before a long run) where the folder cannot
//! be written; [`Output::commit`] puts the whole file at its name, or says why not; a file
//! never committed leaves nothing behind.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use udpkit::Error;

/// A file being written; see the module's promise.
pub struct Output {
    path: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
}

impl Output {
    /// A private temporary file beside `path`, to become `path` on [`Output::commit`].
    pub fn create(path: &Path) -> Result<Output, Error> {
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} is not a file's name", path.display())))?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let mut builder = tempfile::Builder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let file = builder
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(folder)
            .map_err(|e| {
                Error::io(
                    format!(
                        "cannot write {} (checked before starting, so nothing was done)",
                        path.display()
                    ),
                    without_temporary_name(e),
                )
            })?;
        Ok(Output {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        })
    }

    /// What is written goes to the file.
    pub fn writer(&mut self) -> &mut impl Write {
        &mut self.file
    }

    /// Writes `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file.write_all(bytes).map_err(|e| self.failed(e))
    }

    fn failed(&self, e: std::io::Error) -> Error {
        Error::io(
            format!("cannot write {}", self.path.display()),
            without_temporary_name(e),
        )
    }

    /// Puts the whole file at its name.
    pub fn commit(self) -> Result<(), Error> {
        let path = self.path.clone();
        let failed = |e: std::io::Error| {
            Error::io(
                format!("cannot write {}", path.display()),
                without_temporary_name(e),
            )
        };
        let file = self.file.into_inner().map_err(|e| failed(e.into_error()))?;
        file.persist(&path).map_err(|e| failed(e.error))?;
        Ok(())
    }
}

/// The system's error without the temporary file's name that tempfile adds to it (`at
/// path ".x.svg.ONeAQz.tmp"`): the user named another file, and that one is what is said.
fn without_temporary_name(e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    match text.find(" at path \"") {
        Some(at) => std::io::Error::new(e.kind(), &text[..at]),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_planted_at_the_name_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("out.svg");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        let mut o = Output::create(&out).unwrap();
        o.write(b"<svg/>").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&out).unwrap(), b"<svg/>");
        // Nothing else is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_uncommitted_file_leaves_nothing_and_a_bad_folder_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never");
        drop(Output::create(&out).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(Output::create(&dir.path().join("no/such/folder/x")).is_err());
    }
}
