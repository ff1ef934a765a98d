//! The full-screen view: raw mode on the alternate screen, a redraw each
//! interval, on a key and on a resize.

use super::rates::{compute, sort, Sample, SortKey, View};
use super::screen::screen;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, queue, terminal};
use std::io::Write;
use std::time::{Duration, Instant};

/// Puts the terminal back however the view ends (an error, a panic).
struct Restore;

impl Restore {
    fn enter(out: &mut impl Write) -> std::io::Result<Restore> {
        terminal::enable_raw_mode()?;
        let guard = Restore;
        crossterm::execute!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = crossterm::execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave.
    Quit,
    /// Sort by this key.
    Sort(SortKey),
    /// Nothing.
    Ignore,
}

/// The action of a key press under the current sort order.
pub fn action(key: KeyEvent, current: SortKey) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Ignore;
    }
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('s') => Action::Sort(current.next()),
        KeyCode::Char(c) => SortKey::parse(&c.to_string()).map_or(Action::Ignore, Action::Sort),
        _ => Action::Ignore,
    }
}

fn draw(
    out: &mut impl Write,
    view: &View,
    sort: SortKey,
    status: Option<&str>,
) -> std::io::Result<()> {
    let (w, h) = terminal::size()?;
    for (i, line) in (0u16..).zip(screen(view, sort, status, w, h)) {
        queue!(
            out,
            cursor::MoveTo(0, i),
            crossterm::style::Print(line),
            terminal::Clear(terminal::ClearType::UntilNewLine)
        )?;
    }
    queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown))?;
    out.flush()
}

/// Runs the view until `q`: polls with `poll` every `interval`, draws the
/// rates since the previous poll. A failed poll keeps the last rates on
/// screen with the error above them, and the next poll tries again.
pub fn run(
    mut poll: impl FnMut() -> Result<Sample, String>,
    interval: Duration,
    mut order: SortKey,
) -> Result<(), String> {
    let mut prev = poll()?;
    let mut view = compute(&prev, &prev);
    // Nothing to measure against yet: the rows come up without rates.
    view.ports.iter_mut().for_each(|p| {
        p.new = true;
        p.rates = None;
    });
    let mut status: Option<String> = None;
    let mut out = std::io::stdout();
    let _restore = Restore::enter(&mut out).map_err(|e| format!("cannot use the terminal: {e}"))?;
    let io = |e: std::io::Error| format!("terminal: {e}");
    let mut next = Instant::now() + interval;
    loop {
        sort(&mut view.ports, order);
        draw(&mut out, &view, order, status.as_deref()).map_err(io)?;
        // Wait for a key, a resize or the next poll.
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).map_err(io)? {
            match event::read().map_err(io)? {
                Event::Key(k) => match action(k, order) {
                    Action::Quit => return Ok(()),
                    Action::Sort(k) => order = k,
                    Action::Ignore => {}
                },
                // Drawn at the new size at the top of the loop.
                Event::Resize(..) => {}
                _ => {}
            }
            continue;
        }
        next = Instant::now() + interval;
        match poll() {
            Ok(cur) => {
                view = compute(&prev, &cur);
                prev = cur;
                status = None;
            }
            Err(e) => status = Some(format!("{e}; retrying")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_and_quit() {
        let press = |c| KeyEvent::new(c, KeyModifiers::NONE);
        let t = SortKey::Traffic;
        assert_eq!(action(press(KeyCode::Char('q')), t), Action::Quit);
        assert_eq!(action(press(KeyCode::Esc), t), Action::Quit);
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), t),
            Action::Quit
        );
        assert_eq!(action(press(KeyCode::Char('s')), t), Action::Sort(t.next()));
        assert_eq!(
            action(press(KeyCode::Char('d')), t),
            Action::Sort(SortKey::Drops)
        );
        assert_eq!(
            action(press(KeyCode::Char('n')), t),
            Action::Sort(SortKey::Name)
        );
        assert_eq!(action(press(KeyCode::Char('x')), t), Action::Ignore);
        assert_eq!(action(press(KeyCode::Up), t), Action::Ignore);
    }
}
