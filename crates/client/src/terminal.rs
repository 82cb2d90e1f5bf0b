//! The local terminal during a session: raw mode exactly as OpenSSH's
//! `enter_raw_mode` (sshtty.c) sets it, and put back on every way out.
//!
//! A [`RawMode`] guard saves the terminal's settings and restores them with
//! `TCSADRAIN` (after pending output is written, so the last screenful is not
//! cut) when dropped. Because a guard is not dropped by `std::process::exit`,
//! and a panic may unwind nowhere near it, every guard is also registered in a
//! process-wide list that `restore_all` puts back: the panic hook installed
//! by the first guard (chained in front of the previous hook, so the panic
//! message lands on a sane terminal) calls it, and so can any exit path.

use nix::sys::termios::{
    self, InputFlags, LocalFlags, OutputFlags, SetArg, SpecialCharacterIndices, Termios,
};
use rsh_proto::PtySize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

/// The size of a terminal window, as TIOCGWINSZ reports it: the protocol's
/// [`PtySize`], one type from the local terminal to the remote pty. The old
/// name stays for the command line's use.
pub type WindowSize = PtySize;

/// The window size of the terminal on `fd`, or `None` if it is not a
/// terminal or reports no size (0x0, as a fresh pty does).
pub(crate) fn window_size(fd: impl AsFd) -> Option<PtySize> {
    // rustix's tcgetwinsize is TIOCGWINSZ behind a safe API; nix only offers
    // the ioctl as an `unsafe fn`, which the workspace does not allow.
    let size = rustix::termios::tcgetwinsize(fd).ok()?;
    if size.ws_col == 0 && size.ws_row == 0 {
        return None;
    }
    Some(PtySize {
        cols: size.ws_col,
        rows: size.ws_row,
        pixel_width: size.ws_xpixel,
        pixel_height: size.ws_ypixel,
    })
}

/// The window size of our stdin's terminal (where ssh asks too).
pub fn local_window_size() -> Option<PtySize> {
    window_size(std::io::stdin())
}

/// `saved` with OpenSSH's raw-mode changes: no input translation, parity
/// errors ignored, no flow control, no signals from keys (Ctrl-C, Ctrl-Z and
/// Ctrl-\ become bytes for the remote terminal), no line editing, no echo
/// (the remote pty echoes), no output processing (the remote pty does
/// it), reads return each byte as it comes.
pub(crate) fn raw_termios(saved: &Termios) -> Termios {
    let mut raw = saved.clone();
    raw.input_flags |= InputFlags::IGNPAR;
    raw.input_flags &= !(InputFlags::ISTRIP
        | InputFlags::INLCR
        | InputFlags::IGNCR
        | InputFlags::ICRNL
        | InputFlags::IXON
        | InputFlags::IXANY
        | InputFlags::IXOFF);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // nix has no name for IUCLC (a Linux leftover); ssh clears it where it exists.
        raw.input_flags &= !InputFlags::from_bits_retain(nix::libc::IUCLC);
    }
    raw.local_flags &= !(LocalFlags::ISIG
        | LocalFlags::ICANON
        | LocalFlags::ECHO
        | LocalFlags::ECHOE
        | LocalFlags::ECHOK
        | LocalFlags::ECHONL
        | LocalFlags::IEXTEN);
    raw.output_flags &= !OutputFlags::OPOST;
    raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    raw
}

/// A terminal's settings to put back, shared by its guard and the registry.
struct Saved {
    id: u64,
    /// Our own duplicate of the terminal's descriptor, so the settings can be
    /// put back whatever happened to the caller's.
    fd: OwnedFd,
    /// The plain C struct (not nix's `Termios`, which is not `Sync`).
    termios: nix::libc::termios,
}

impl Saved {
    fn restore(&self) -> nix::Result<()> {
        termios::tcsetattr(&self.fd, SetArg::TCSADRAIN, &Termios::from(self.termios))
    }
}

/// Guards in force, oldest first.
static ACTIVE: Mutex<Vec<Arc<Saved>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn active() -> MutexGuard<'static, Vec<Arc<Saved>>> {
    // Nothing panics while holding the lock; even so, a poisoned list is
    // still the right list, and restoring the terminal matters more.
    ACTIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Puts back the settings saved by every [`RawMode`] guard still in force,
/// newest first (so nested guards end with the oldest saved state). For exit
/// paths that do not drop the guards: `std::process::exit`, a signal, a panic.
pub(crate) fn restore_all() {
    for saved in active().iter().rev() {
        let _ = saved.restore();
    }
}

fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_all();
            previous(info);
        }));
    });
}

/// The local terminal in raw mode until this is dropped.
pub struct RawMode {
    saved: Arc<Saved>,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMode")
            .field("id", &self.saved.id)
            .finish_non_exhaustive()
    }
}

impl RawMode {
    /// Saves the settings of the terminal on `fd` and puts it in raw mode.
    ///
    /// # Errors
    /// If `fd` is not a terminal (`ENOTTY`) or cannot be set.
    pub fn enter(fd: impl AsFd) -> std::io::Result<RawMode> {
        let fd = fd.as_fd();
        let current = termios::tcgetattr(fd)?;
        let saved = Arc::new(Saved {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            fd: fd.try_clone_to_owned()?,
            termios: nix::libc::termios::from(current),
        });
        install_panic_hook();
        // Registered before the change, so a panic right after finds it.
        active().push(saved.clone());
        let guard = RawMode { saved };
        guard.reenter()?;
        Ok(guard)
    }

    /// Puts the saved settings back, keeping the guard (for `~^Z`).
    ///
    /// # Errors
    /// If the terminal cannot be set.
    pub fn restore(&self) -> std::io::Result<()> {
        Ok(self.saved.restore()?)
    }

    /// Puts the terminal in raw mode again after [`RawMode::restore`].
    ///
    /// # Errors
    /// If the terminal cannot be set.
    pub(crate) fn reenter(&self) -> std::io::Result<()> {
        let raw = raw_termios(&Termios::from(self.saved.termios));
        Ok(termios::tcsetattr(&self.saved.fd, SetArg::TCSADRAIN, &raw)?)
    }

    /// The window size of this terminal.
    pub fn window_size(&self) -> Option<PtySize> {
        window_size(&self.saved.fd)
    }

    /// Stops this process as Ctrl-Z would (`~^Z`): the terminal's settings
    /// are put back, SIGTSTP stops us until the shell continues us, then raw
    /// mode is entered again. The caller resends the window size, which may
    /// have changed meanwhile.
    ///
    /// # Errors
    /// If the terminal cannot be set or the signal not raised.
    pub fn suspend(&self) -> std::io::Result<()> {
        self.restore()?;
        // This thread (the runtime's) stops here, as does the whole process,
        // until SIGCONT.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTSTP)?;
        self.reenter()
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = self.saved.restore();
        active().retain(|saved| saved.id != self.saved.id);
    }
}

/// Our terminal as [`tokio::io::AsyncRead`] that never blocks the runtime:
/// keys are read when the reactor says the terminal is ready, with no thread
/// in between (as `tokio::io::stdin()` has; a keystroke's round trip is what
/// a user feels). Output goes through [`TtyOutput`].
///
/// The terminal is opened anew by its name, non-blocking. Setting
/// `O_NONBLOCK` on our stdin instead would set it on the open file shared
/// with the shell that started us, which then breaks if we die or are
/// stopped (`~^Z`) before clearing it; a file of our own has its own flags.
#[derive(Debug)]
pub struct Tty {
    file: tokio::io::unix::AsyncFd<std::fs::File>,
    /// In raw mode a read hands over all that is queued, so a short one
    /// drained the terminal (see [`Tty::raw_input`]). Not in canonical
    /// mode, where a read returns one line and more may be queued.
    short_read_drains: bool,
}

impl Tty {
    /// Opens the terminal that `fd` (our stdin) is on, for reading only: no
    /// wake-up each time the terminal drains what we wrote to it through
    /// [`TtyOutput`].
    ///
    /// # Errors
    /// If `fd` is not a terminal or its device cannot be opened; the caller
    /// may fall back to `tokio::io::stdin()`.
    pub fn input(fd: impl AsFd) -> std::io::Result<Tty> {
        // Deprecated because a `T` could change its descriptor while it is
        // registered, which a `File` cannot; the replacement is an `unsafe
        // fn`, which the workspace does not allow.
        #[allow(deprecated)]
        let file =
            tokio::io::unix::AsyncFd::with_interest(open_own(fd)?, tokio::io::Interest::READABLE)?;
        Ok(Tty {
            file,
            short_read_drains: false,
        })
    }

    /// [`Tty::input`] for a terminal the caller keeps in raw mode
    /// ([`RawMode`]) while reading: a short read forgets the readiness at
    /// once (tokio keeps any that arrived since) instead of learning it from
    /// an EAGAIN read, which a typed key's trip to the remote would wait for.
    ///
    /// # Errors
    /// As [`Tty::input`].
    pub fn raw_input(fd: impl AsFd) -> std::io::Result<Tty> {
        let mut tty = Self::input(fd)?;
        tty.short_read_drains = true;
        Ok(tty)
    }
}

/// The terminal `fd` is on, opened anew by its name, non-blocking (see
/// [`Tty`] for why not `fd` itself).
fn open_own(fd: impl AsFd) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = nix::unistd::ttyname(fd)?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
}

/// Our terminal as the session's output: written at once, and watched for
/// room only while a write would block.
///
/// A descriptor registered for writability wakes the client each time the
/// terminal takes what was written, which is after every echoed key: one
/// more wake-up per keystroke than ssh, which polls its terminal for room
/// only when it has output waiting. So the descriptor is registered when a
/// write meets EAGAIN and deregistered once one succeeds again.
#[derive(Debug)]
pub struct TtyOutput {
    /// Registered while a write waits for room. Declared before `file` so
    /// that it is dropped (deregistered) while the descriptor is still open.
    waiting: Option<tokio::io::unix::AsyncFd<std::os::fd::RawFd>>,
    file: std::fs::File,
}

impl TtyOutput {
    /// Opens the terminal that `fd` (our stdout) is on, for writing.
    ///
    /// # Errors
    /// As [`Tty::input`].
    pub fn open(fd: impl AsFd) -> std::io::Result<TtyOutput> {
        Ok(TtyOutput {
            waiting: None,
            file: open_own(fd)?,
        })
    }
}

impl tokio::io::AsyncWrite for TtyOutput {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        use std::task::Poll;
        let this = &mut *self;
        loop {
            match (&this.file).write(data) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                result => {
                    // Room again: stop watching (one epoll_ctl, only after
                    // the terminal was full).
                    this.waiting = None;
                    return Poll::Ready(result);
                }
            }
            let waiting = match &mut this.waiting {
                Some(waiting) => waiting,
                // Registering reports the current state, so room that came
                // since the EAGAIN is not missed. The raw descriptor stays
                // open for as long as this registration: see `waiting`.
                none => {
                    #[allow(deprecated)]
                    let fd = tokio::io::unix::AsyncFd::with_interest(
                        this.file.as_raw_fd(),
                        tokio::io::Interest::WRITABLE,
                    )?;
                    none.insert(fd)
                }
            };
            match waiting.poll_write_ready(cx) {
                Poll::Ready(Ok(mut ready)) => ready.clear_ready(),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // Nothing is buffered here; the terminal has what was written.
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncRead for Tty {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        use std::task::Poll;
        loop {
            let mut ready = match self.file.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let room = unfilled.len();
            match ready.try_io(|file| file.get_ref().read(unfilled)) {
                Ok(Ok(len)) => {
                    if self.short_read_drains && len > 0 && len < room {
                        ready.clear_ready();
                    }
                    buf.advance(len);
                    return Poll::Ready(Ok(()));
                }
                // A hung-up terminal reads EIO: the end of its input.
                Ok(Err(err)) if err.raw_os_error() == Some(nix::libc::EIO) => {
                    return Poll::Ready(Ok(()))
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                // Not ready after all: readiness was cleared, poll again.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nix::pty::openpty;

    /// The panic hook restores every registered terminal, so tests that
    /// check a terminal is raw must not overlap with one that panics.
    static SERIAL: Mutex<()> = Mutex::new(());

    pub(crate) fn serial() -> MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Everything `stty -g` would show.
    fn settings(fd: impl AsFd) -> (u32, u32, u32, u32, Vec<u8>) {
        let t = nix::libc::termios::from(termios::tcgetattr(fd).expect("tcgetattr"));
        (t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc.to_vec())
    }

    /// A pty set up as a user's terminal usually is (cooked, echo, signals).
    fn cooked_pty() -> nix::pty::OpenptyResult {
        let pty = openpty(None, None).expect("openpty");
        let mut t = termios::tcgetattr(&pty.slave).expect("tcgetattr");
        t.input_flags |= InputFlags::ICRNL | InputFlags::IXON | InputFlags::ISTRIP;
        t.input_flags &= !InputFlags::IGNPAR;
        t.local_flags |= LocalFlags::ISIG
            | LocalFlags::ICANON
            | LocalFlags::ECHO
            | LocalFlags::ECHOE
            | LocalFlags::ECHOK
            | LocalFlags::IEXTEN;
        t.output_flags |= OutputFlags::OPOST;
        termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &t).expect("tcsetattr");
        pty
    }

    fn assert_raw(fd: impl AsFd) {
        let t = termios::tcgetattr(fd).expect("tcgetattr");
        assert!(t.input_flags.contains(InputFlags::IGNPAR));
        for flag in [
            InputFlags::ISTRIP,
            InputFlags::INLCR,
            InputFlags::IGNCR,
            InputFlags::ICRNL,
            InputFlags::IXON,
            InputFlags::IXANY,
            InputFlags::IXOFF,
            InputFlags::from_bits_retain(nix::libc::IUCLC),
        ] {
            assert!(!t.input_flags.intersects(flag), "{flag:?} still set");
        }
        for flag in [
            LocalFlags::ISIG,
            LocalFlags::ICANON,
            LocalFlags::ECHO,
            LocalFlags::ECHOE,
            LocalFlags::ECHOK,
            LocalFlags::ECHONL,
            LocalFlags::IEXTEN,
        ] {
            assert!(!t.local_flags.intersects(flag), "{flag:?} still set");
        }
        assert!(!t.output_flags.contains(OutputFlags::OPOST));
        assert_eq!(t.control_chars[SpecialCharacterIndices::VMIN as usize], 1);
        assert_eq!(t.control_chars[SpecialCharacterIndices::VTIME as usize], 0);
    }

    #[test]
    fn raw_mode_uses_the_openssh_flags_and_drop_restores_everything() {
        let _serial = serial();
        let pty = cooked_pty();
        let before = settings(&pty.slave);
        {
            let _raw = RawMode::enter(&pty.slave).expect("raw mode");
            assert_raw(&pty.slave);
            // Flags ssh leaves alone stay as they were.
            assert_eq!(settings(&pty.slave).2, before.2, "c_cflag changed");
        }
        assert_eq!(settings(&pty.slave), before);
    }

    #[test]
    fn restore_then_reenter_for_suspend() {
        let _serial = serial();
        let pty = cooked_pty();
        let before = settings(&pty.slave);
        let raw = RawMode::enter(&pty.slave).expect("raw mode");
        raw.restore().expect("restore");
        assert_eq!(settings(&pty.slave), before);
        raw.reenter().expect("reenter");
        assert_raw(&pty.slave);
        drop(raw);
        assert_eq!(settings(&pty.slave), before);
    }

    #[test]
    fn a_panic_restores_the_terminal_before_any_guard_is_dropped() {
        let _serial = serial();
        let pty = cooked_pty();
        let before = settings(&pty.slave);
        let raw = RawMode::enter(&pty.slave).expect("raw mode");
        // The guard lives outside the closure: only the panic hook can have
        // restored the terminal when catch_unwind returns.
        let result = std::panic::catch_unwind(|| {
            assert_raw(&pty.slave);
            panic!("boom (expected by this test)");
        });
        assert!(result.is_err());
        assert_eq!(settings(&pty.slave), before, "the hook restored it");
        drop(raw);
        assert_eq!(settings(&pty.slave), before);
    }

    #[test]
    fn a_panic_unwinding_through_the_guard_restores_the_terminal() {
        let _serial = serial();
        let pty = cooked_pty();
        let before = settings(&pty.slave);
        let result = std::panic::catch_unwind(|| {
            let _raw = RawMode::enter(&pty.slave).expect("raw mode");
            panic!("boom (expected by this test)");
        });
        assert!(result.is_err());
        assert_eq!(settings(&pty.slave), before);
    }

    #[test]
    fn restore_all_serves_exit_paths_that_skip_drop() {
        let _serial = serial();
        let pty = cooked_pty();
        let before = settings(&pty.slave);
        let raw = RawMode::enter(&pty.slave).expect("raw mode");
        restore_all();
        assert_eq!(settings(&pty.slave), before);
        drop(raw);
        // A dropped guard is no longer in the list.
        assert!(active().is_empty());
    }

    #[test]
    fn nested_guards_end_with_the_first_saved_settings() {
        let _serial = serial();
        let pty = cooked_pty();
        let before = settings(&pty.slave);
        let outer = RawMode::enter(&pty.slave).expect("raw mode");
        let inner = RawMode::enter(&pty.slave).expect("raw mode again");
        restore_all();
        assert_eq!(settings(&pty.slave), before);
        drop(inner);
        drop(outer);
        assert_eq!(settings(&pty.slave), before);
    }

    #[test]
    fn not_a_terminal_is_an_error_and_has_no_size() {
        let file = tempfile::tempfile().expect("temp file");
        assert!(RawMode::enter(&file).is_err());
        assert_eq!(window_size(&file), None);
    }

    #[test]
    fn window_size_reads_what_the_pty_was_given() {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 640,
            ws_ypixel: 480,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        assert_eq!(
            window_size(&pty.slave),
            Some(PtySize {
                cols: 80,
                rows: 24,
                pixel_width: 640,
                pixel_height: 480
            })
        );
        let no_size = openpty(None, None).expect("openpty");
        assert_eq!(window_size(&no_size.slave), None);
    }

    /// More than the terminal holds, to a reader that drains it slowly:
    /// the writes that meet a full terminal wait for room (registered only
    /// then) and every byte arrives.
    #[tokio::test]
    async fn output_waits_for_room_when_the_terminal_is_full() {
        use std::io::Read;
        use tokio::io::AsyncWriteExt;
        const LEN: usize = 256 * 1024;
        let pty = openpty(None, None).expect("openpty");
        let mut out = TtyOutput::open(&pty.slave).expect("open the tty");
        let mut screen = std::fs::File::from(pty.master.try_clone().expect("dup"));
        let reader = std::thread::spawn(move || {
            let mut seen = 0;
            let mut buf = [0u8; 1024];
            // Bounded: LEN bytes, then the writer's end.
            while seen < LEN {
                match screen.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += buf[..n].iter().filter(|&&b| b == b'x').count(),
                }
                // Slower than the writer, so the terminal fills.
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            seen
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            out.write_all(&[b'x'; LEN]),
        )
        .await
        .expect("written within 30 s")
        .expect("write");
        assert_eq!(reader.join().expect("reader"), LEN);
        assert!(out.waiting.is_none(), "no longer watched once written");
    }

    #[tokio::test]
    async fn tty_reads_and_writes_without_making_the_shared_file_non_blocking() {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        use std::io::Write;
        use tokio::io::AsyncReadExt;
        let pty = openpty(None, None).expect("openpty");
        let flags = |fd: &OwnedFd| {
            use std::os::fd::AsRawFd;
            OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).expect("F_GETFL"))
        };
        let before = flags(&pty.slave);
        let mut tty = Tty::input(&pty.slave).expect("open the tty");
        let mut out = TtyOutput::open(&pty.slave).expect("open the tty for output");
        assert_eq!(flags(&pty.slave), before, "the caller's file is untouched");
        assert!(!before.contains(OFlag::O_NONBLOCK));
        // Cooked mode: the line arrives once it ends.
        let mut keyboard = std::fs::File::from(pty.master.try_clone().expect("dup"));
        keyboard.write_all(b"hello\n").expect("typing");
        let mut buf = [0u8; 64];
        let len = tokio::time::timeout(std::time::Duration::from_secs(10), tty.read(&mut buf))
            .await
            .expect("read within 10 s")
            .expect("read");
        assert_eq!(&buf[..len], b"hello\n");
        // Output reaches the other side (the pty turns \n into \r\n).
        tokio::io::AsyncWriteExt::write_all(&mut out, b"out\n")
            .await
            .expect("write");
        // The echo of "hello" comes first; both are already in the pty.
        let mut screen = Vec::new();
        for _ in 0..5 {
            let mut chunk = [0u8; 64];
            let len = std::io::Read::read(&mut keyboard, &mut chunk).expect("read the screen");
            screen.extend_from_slice(&chunk[..len]);
            if screen.ends_with(b"out\r\n") {
                break;
            }
        }
        assert!(screen.ends_with(b"out\r\n"), "{screen:?}");
        // The terminal hung up: end of input, not an error.
        drop(keyboard);
        drop(pty.master);
        let len = tokio::time::timeout(std::time::Duration::from_secs(10), tty.read(&mut buf))
            .await
            .expect("read within 10 s")
            .expect("end of input");
        assert_eq!(len, 0);
    }
}
