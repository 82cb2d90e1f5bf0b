//! Which files the server may trust, and reading them safely.
//!
//! A trust file (`authorized_keys`, the host key) decides who gets in, so
//! anyone who can change it owns the server's account. Like sshd's
//! StrictModes, a trust file is used only when nobody but the server's user
//! (or root) can change it:
//!
//! * the file itself is owned by the server's effective uid or by root and
//!   is not writable by group or others;
//! * the directory holding it (`RSH_HOME`) likewise: owned by the euid or
//!   root, not writable by group or others, sticky or not (a writable sticky
//!   directory still lets others create, in place of a missing file, a file of
//!   their own, and the file owner check is the only thing left then);
//! * every directory above it, up to `/`, is owned by the euid or root and
//!   is either not writable by group or others, or has the sticky bit (as
//!   `/tmp`, mode 1777): there others cannot rename or remove entries they
//!   do not own, so they cannot swap the path below it.
//!
//! Symlinks are followed, as sshd does with `realpath`: the file they lead to
//! and every directory on the resolved path are checked by the rules above,
//! and so is every directory on the path as written, and the directory of
//! every link along a chain of links (where the links live, since whoever
//! can write there can re-point them).
//!
//! A trust file is read only if it is a regular file: it is opened with
//! `O_NONBLOCK` (a FIFO does not block the open), checked with `fstat`, and
//! read up to [`MAX_TRUST_FILE_LEN`] bytes.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// The most bytes read from a trust file (1 MiB, some 15,000 keys).
pub const MAX_TRUST_FILE_LEN: u64 = 1024 * 1024;

/// A path that is not trusted, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct UntrustedPath {
    /// The file or directory that failed the check.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: UntrustedReason,
}

/// Why a path is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UntrustedReason {
    /// Group or others may write it.
    WritableByOthers {
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by a user other than the server's and root.
    ForeignOwner {
        /// The owner's uid.
        owner: u32,
        /// The uid the server runs as.
        expected: u32,
    },
    /// The trust file is not a regular file (a FIFO, a device...).
    NotARegularFile {
        /// What was found instead.
        found: &'static str,
    },
    /// A path component that should be a directory is not one.
    NotADirectory {
        /// What was found instead.
        found: &'static str,
    },
}

impl fmt::Display for UntrustedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UntrustedReason::WritableByOthers { mode } => {
                write!(f, "writable by group/others (mode {mode:04o})")
            }
            UntrustedReason::ForeignOwner { owner, expected } => write!(
                f,
                "owned by uid {owner}, not by uid {expected} (the server's) or root"
            ),
            UntrustedReason::NotARegularFile { found } => {
                write!(f, "not a regular file ({found})")
            }
            UntrustedReason::NotADirectory { found } => write!(f, "not a directory ({found})"),
        }
    }
}

/// The server's effective uid, the owner trust files must have (or root).
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Checks that `path` (an existing file) may be trusted by a server running
/// as `uid`, by the rules in the module documentation.
///
/// # Errors
/// [`Error::Untrusted`] naming the offending path and why, or [`Error::Io`]
/// if a path component cannot be inspected (a missing file included).
pub fn check_trusted_path(path: &Path, uid: u32) -> Result<(), Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    check_owner_and_mode(path, &meta, uid, false)?;
    check_directories(path, uid)?;
    check_link_chain(path, uid)
}

/// Reads a file the server acts on as it would a trust file (its config
/// file names the shell every command runs under): checked by
/// [`check_trusted_path`] for `uid`, opened without blocking, refused unless
/// a regular file, at most [`MAX_TRUST_FILE_LEN`] bytes. `Ok(None)` if it
/// does not exist; a missing file in an unsafe directory is still refused
/// (someone else could create it), unless the directory is missing too.
///
/// # Errors
/// [`Error::Untrusted`], [`Error::TooLarge`] or [`Error::Io`], naming the
/// path concerned.
pub fn read_trusted_file(path: &Path, uid: u32) -> Result<Option<Vec<u8>>, Error> {
    let absolute = absolute(path)?;
    if let Some(parent) = absolute.parent() {
        match std::fs::metadata(parent) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
    }
    match open_regular(&absolute, Some(uid))? {
        Some(file) => file.read_bytes().map(Some),
        None => Ok(None),
    }
}

/// The most links followed in a chain, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// Checks the directory of every link a chain of symlinks passes through
/// (the first link's own directory and the final file's are checked by the
/// callers): whoever can write one of them can re-point the chain.
fn check_link_chain(path: &Path, uid: u32) -> Result<(), Error> {
    let mut current = absolute(path)?;
    for _ in 0..MAX_LINKS {
        let is_link = std::fs::symlink_metadata(&current)
            .map_err(|e| Error::io(&current, e))?
            .file_type()
            .is_symlink();
        if !is_link {
            return Ok(());
        }
        let target = std::fs::read_link(&current).map_err(|e| Error::io(&current, e))?;
        let next = match current.parent() {
            Some(dir) => dir.join(&target),
            None => target,
        };
        if let Some(dir) = next.parent() {
            check_trusted_dir(dir, uid)?;
        }
        current = next;
    }
    Err(Error::io(
        path,
        std::io::Error::other(format!("more than {MAX_LINKS} symbolic links")),
    ))
}

/// Checks that the directory `dir` may hold trust files (such as
/// `RSH_HOME`): itself owned by `uid` or root and not writable by group or
/// others, and every directory above it as for [`check_trusted_path`].
///
/// # Errors
/// As [`check_trusted_path`].
pub fn check_trusted_dir(dir: &Path, uid: u32) -> Result<(), Error> {
    let absolute = absolute(dir)?;
    check_dir_chain(&absolute, uid)?;
    let resolved = std::fs::canonicalize(&absolute).map_err(|e| Error::io(&absolute, e))?;
    if resolved != absolute {
        check_dir_chain(&resolved, uid)?;
    }
    Ok(())
}

/// Checks the directories on the way to the entry `path`, as written and
/// as resolved (the entry itself may be missing, or a link).
fn check_directories(path: &Path, uid: u32) -> Result<(), Error> {
    let absolute = absolute(path)?;
    let Some(parent) = absolute.parent() else {
        return Ok(());
    };
    check_trusted_dir(parent, uid)?;
    // The directory of the file a link leads to, if elsewhere.
    if let Ok(target) = std::fs::canonicalize(&absolute) {
        let resolved_parent = std::fs::canonicalize(parent).ok();
        if let Some(target_dir) = target.parent() {
            if Some(target_dir) != resolved_parent.as_deref() {
                check_dir_chain(target_dir, uid)?;
            }
        }
    }
    Ok(())
}

/// Checks `dir` strictly (it holds the trust files), then every directory
/// above it, allowing a sticky bit there.
fn check_dir_chain(dir: &Path, uid: u32) -> Result<(), Error> {
    for (depth, dir) in dir.ancestors().enumerate() {
        if dir.as_os_str().is_empty() {
            break;
        }
        // stat follows links, so a linked directory is checked where it
        // really is (and the link itself lives in the next one up).
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(untrusted(
                dir,
                UntrustedReason::NotADirectory {
                    found: file_type_name(&meta),
                },
            ));
        }
        check_owner_and_mode(dir, &meta, uid, depth > 0)?;
    }
    Ok(())
}

fn check_owner_and_mode(
    path: &Path,
    meta: &Metadata,
    uid: u32,
    sticky_ok: bool,
) -> Result<(), Error> {
    let owner = meta.uid();
    if owner != uid && owner != 0 {
        return Err(untrusted(
            path,
            UntrustedReason::ForeignOwner {
                owner,
                expected: uid,
            },
        ));
    }
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky && meta.is_dir()) {
        return Err(untrusted(path, UntrustedReason::WritableByOthers { mode }));
    }
    Ok(())
}

fn untrusted(path: &Path, reason: UntrustedReason) -> Error {
    Error::Untrusted(UntrustedPath {
        path: path.to_owned(),
        reason,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        let cwd = std::env::current_dir().map_err(|e| Error::io(path, e))?;
        Ok(cwd.join(path))
    }
}

fn file_type_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// What identifies one version of a file: if none of it changed, neither
/// did the contents (a replacement by `mv` changes the inode, an edit in
/// place the mtime, a `chmod`/`chown` the ctime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub(crate) fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// An opened trust file, checked to be a regular file.
pub(crate) struct TrustFile {
    file: File,
    pub(crate) stamp: Stamp,
    mode: u32,
    path: PathBuf,
}

/// Opens a file for reading without blocking on a FIFO, and refuses
/// anything but a regular file. `Ok(None)` if it does not exist. With
/// `strict_uid`, the file and its directories must pass
/// [`check_trusted_path`] for that uid, and the file opened is checked again
/// through its descriptor.
pub(crate) fn open_regular(
    path: &Path,
    strict_uid: Option<u32>,
) -> Result<Option<TrustFile>, Error> {
    if let Some(uid) = strict_uid {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // A missing file trusts nobody; its directory must still be
                // sound, or someone else could create it.
                check_directories(path, uid)?;
                return Ok(None);
            }
            _ => check_trusted_path(path, uid)?,
        }
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        // Opening a FIFO for reading would wait for a writer.
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(untrusted(
            path,
            UntrustedReason::NotARegularFile {
                found: file_type_name(&meta),
            },
        ));
    }
    if let Some(uid) = strict_uid {
        // What we opened, not what the path named a moment ago.
        check_owner_and_mode(path, &meta, uid, false)?;
    }
    Ok(Some(TrustFile {
        stamp: Stamp::of(&meta),
        mode: meta.mode() & 0o7777,
        file,
        path: path.to_owned(),
    }))
}

impl TrustFile {
    /// The permission bits of the file opened.
    pub(crate) fn mode(&self) -> u32 {
        self.mode
    }

    /// The contents, at most [`MAX_TRUST_FILE_LEN`] bytes.
    pub(crate) fn read_bytes(self) -> Result<Vec<u8>, Error> {
        let mut bytes = Vec::new();
        (&self.file)
            .take(MAX_TRUST_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        if bytes.len() as u64 > MAX_TRUST_FILE_LEN {
            return Err(Error::TooLarge {
                path: self.path,
                max: MAX_TRUST_FILE_LEN,
            });
        }
        Ok(bytes)
    }

    /// The contents as text; invalid UTF-8 is replaced, so that a bad line
    /// becomes a warning rather than failing the whole file.
    pub(crate) fn read_text(self) -> Result<String, Error> {
        let bytes = self.read_bytes()?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A private directory holding a private file: trusted, wherever the
    /// temp dir is (under the sticky, root-owned /tmp by default).
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).expect("mkdir");
        chmod(&home, 0o700);
        let file = home.join("authorized_keys");
        std::fs::write(&file, "").expect("write");
        chmod(&file, 0o600);
        (tmp, home, file)
    }

    fn reason(result: Result<(), Error>) -> (PathBuf, UntrustedReason) {
        match result {
            Err(Error::Untrusted(UntrustedPath { path, reason })) => (path, reason),
            other => panic!("expected Untrusted, got {other:?}"),
        }
    }

    const NOBODY: u32 = 65534;

    /// Whether we may chown to another user (root); tests that need a
    /// foreign owner say so and pass otherwise.
    fn can_chown() -> bool {
        if effective_uid() == 0 {
            true
        } else {
            eprintln!("skipped: a foreign owner needs root to chown");
            false
        }
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).expect("chown");
    }

    #[test]
    fn private_file_in_private_dir_is_trusted() {
        let (_tmp, home, file) = setup();
        let uid = effective_uid();
        check_trusted_path(&file, uid).expect("trusted");
        check_trusted_dir(&home, uid).expect("trusted dir");
        chmod(&file, 0o644);
        check_trusted_path(&file, uid).expect("readable by others is fine");
    }

    #[test]
    fn group_or_other_writable_file_is_refused() {
        let (_tmp, _home, file) = setup();
        for mode in [0o620, 0o602, 0o666] {
            chmod(&file, mode);
            let (path, why) = reason(check_trusted_path(&file, effective_uid()));
            assert_eq!(path, file);
            assert_eq!(why, UntrustedReason::WritableByOthers { mode });
        }
    }

    #[test]
    fn writable_home_is_refused_even_sticky() {
        let (_tmp, home, file) = setup();
        for mode in [0o777, 0o770, 0o1777] {
            chmod(&home, mode);
            let (path, why) = reason(check_trusted_path(&file, effective_uid()));
            assert_eq!(path, home);
            assert_eq!(why, UntrustedReason::WritableByOthers { mode });
            let (path, _) = reason(check_trusted_dir(&home, effective_uid()));
            assert_eq!(path, home);
        }
        let err = check_trusted_dir(&home, effective_uid()).expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: writable by group/others (mode 1777): refusing to trust it",
                home.display()
            )
        );
    }

    #[test]
    fn writable_ancestor_is_refused_unless_sticky() {
        let (tmp, _home, file) = setup();
        chmod(tmp.path(), 0o777);
        let (path, why) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, tmp.path());
        assert_eq!(why, UntrustedReason::WritableByOthers { mode: 0o777 });
        // Like /tmp: others cannot rename what they do not own.
        chmod(tmp.path(), 0o1777);
        check_trusted_path(&file, effective_uid()).expect("sticky ancestor is fine");
        chmod(tmp.path(), 0o700);
    }

    #[test]
    fn foreign_owner_is_refused() {
        if !can_chown() {
            return;
        }
        let (_tmp, home, file) = setup();
        chown(&file, NOBODY);
        let (path, why) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, file);
        assert_eq!(
            why,
            UntrustedReason::ForeignOwner {
                owner: NOBODY,
                expected: effective_uid()
            }
        );
        chown(&file, 0);
        chown(&home, NOBODY);
        let (path, _) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, home);
        // The server's own uid is fine (here nobody's server).
        check_trusted_dir(&home, NOBODY).expect("own dir");
    }

    #[test]
    fn foreign_file_in_a_sticky_directory_is_refused() {
        if !can_chown() {
            return;
        }
        let (tmp, home, file) = setup();
        // The repro: a link from a private home into a 1777 directory where
        // another user placed the file.
        let drop_box = tmp.path().join("drop");
        std::fs::create_dir(&drop_box).expect("mkdir");
        chmod(&drop_box, 0o1777);
        let planted = drop_box.join("ak");
        std::fs::write(&planted, "").expect("write");
        chmod(&planted, 0o644);
        chown(&planted, NOBODY);
        std::fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink(&planted, &file).expect("symlink");
        let (path, why) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, file);
        assert!(
            matches!(why, UntrustedReason::ForeignOwner { .. }),
            "{why:?}"
        );
        // Even our own file there is refused: its directory is writable.
        chown(&planted, effective_uid());
        let (path, why) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, drop_box);
        assert!(matches!(why, UntrustedReason::WritableByOthers { .. }));
        let _ = home;
    }

    #[test]
    fn symlink_to_a_trusted_file_is_followed() {
        let (tmp, home, file) = setup();
        let elsewhere = tmp.path().join("real");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        chmod(&elsewhere, 0o755);
        let real = elsewhere.join("ak");
        std::fs::rename(&file, &real).expect("mv");
        std::os::unix::fs::symlink(&real, &file).expect("symlink");
        check_trusted_path(&file, effective_uid()).expect("trusted through the link");
        // Where the target lives matters too.
        chmod(&elsewhere, 0o777);
        let (path, _) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, elsewhere);
        // And so does the directory holding the link.
        chmod(&elsewhere, 0o755);
        chmod(&home, 0o777);
        let (path, _) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, home);
    }

    #[test]
    fn every_link_of_a_chain_has_its_directory_checked() {
        let (tmp, _home, file) = setup();
        // authorized_keys -> middle/link -> real/ak: the middle link lives in
        // a directory others can write, so they could re-point it.
        let middle = tmp.path().join("middle");
        let real = tmp.path().join("real");
        for dir in [&middle, &real] {
            std::fs::create_dir(dir).expect("mkdir");
            chmod(dir, 0o755);
        }
        let target = real.join("ak");
        std::fs::rename(&file, &target).expect("mv");
        let link = middle.join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        std::os::unix::fs::symlink(&link, &file).expect("symlink");
        check_trusted_path(&file, effective_uid()).expect("a sound chain is trusted");
        chmod(&middle, 0o777);
        let (path, why) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, middle);
        assert_eq!(why, UntrustedReason::WritableByOthers { mode: 0o777 });
        // A relative link is resolved from its own directory.
        chmod(&middle, 0o755);
        std::fs::remove_file(&link).expect("rm");
        std::os::unix::fs::symlink("../real/ak", &link).expect("symlink");
        check_trusted_path(&file, effective_uid()).expect("relative link");
        chmod(&middle, 0o1777);
        let (path, _) = reason(check_trusted_path(&file, effective_uid()));
        assert_eq!(path, middle, "sticky does not help the directory of a link");
    }

    #[test]
    fn open_regular_refuses_a_fifo_without_blocking() {
        let (_tmp, _home, file) = setup();
        std::fs::remove_file(&file).expect("rm");
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        match open_regular(&file, Some(effective_uid())) {
            Err(Error::Untrusted(UntrustedPath {
                reason: UntrustedReason::NotARegularFile { found },
                ..
            })) => assert_eq!(found, "a FIFO"),
            Err(other) => panic!("expected NotARegularFile, got {other:?}"),
            Ok(_) => panic!("expected NotARegularFile, got a file"),
        }
    }

    #[test]
    fn missing_file_needs_a_sound_directory() {
        let (_tmp, home, file) = setup();
        std::fs::remove_file(&file).expect("rm");
        assert!(open_regular(&file, Some(effective_uid()))
            .expect("missing is fine")
            .is_none());
        chmod(&home, 0o777);
        assert!(matches!(
            open_regular(&file, Some(effective_uid())),
            Err(Error::Untrusted(_))
        ));
    }

    #[test]
    fn oversized_file_is_refused() {
        let (_tmp, _home, file) = setup();
        std::fs::write(&file, vec![b'#'; MAX_TRUST_FILE_LEN as usize + 1]).expect("write");
        let opened = open_regular(&file, None).expect("open").expect("exists");
        assert!(matches!(opened.read_bytes(), Err(Error::TooLarge { .. })));
    }
}
