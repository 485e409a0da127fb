//! The terminal view of `flowdar top` (ratatui on crossterm): alerts first,
//! then sparklines of requests/s and of workers reading requests over the
//! last intervals, then functions, workers, calls in flight by age and
//! clients.
use std::{collections::VecDeque, io::Stdout, time::Duration};

use crossterm::{
    event::{self, Event, KeyCode, KeyModifiers},
    execute,
    terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row, Sparkline, Table},
    Terminal,
};

use super::super::format;
use crate::analysis::Interval;

type Term = Terminal<ratatui::backend::CrosstermBackend<Stdout>>;

pub struct Screen {
    term: Term,
    title: String,
    left: bool,
    /// Requests/s and workers reading, one value an interval, newest last.
    requests: VecDeque<u64>,
    reading: VecDeque<u64>,
}

/// Intervals the sparklines remember (wider terminals show the most).
const HISTORY: usize = 300;

fn remember(v: &mut VecDeque<u64>, x: u64) {
    if v.len() == HISTORY {
        v.pop_front();
    }
    v.push_back(x);
}

/// The newest values that fit in `width` cells.
fn newest(v: &VecDeque<u64>, width: u16) -> Vec<u64> {
    let n = usize::from(width.saturating_sub(2));
    v.iter().skip(v.len().saturating_sub(n)).copied().collect()
}

impl Screen {
    pub fn enter(pid: u32, mode: &str) -> anyhow::Result<Self> {
        // A panic's message must land on the normal screen, not in the
        // alternate one that leaving erases.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = disable_raw_mode();
            let _ = execute!(std::io::stdout(), LeaveAlternateScreen);
            previous(info);
        }));
        enable_raw_mode()?;
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(e.into());
        }
        let term = Terminal::new(ratatui::backend::CrosstermBackend::new(out))?;
        let mut s = Self {
            term,
            title: format!(" flowdar top: PID {pid} ({mode}) - q to quit "),
            left: false,
            requests: VecDeque::new(),
            reading: VecDeque::new(),
        };
        s.term.clear()?;
        s.term.draw(|f| {
            f.render_widget(
                Paragraph::new("Waiting for the first interval...").block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(s.title.clone()),
                ),
                f.area(),
            )
        })?;
        Ok(s)
    }

    /// True when q, Esc or Ctrl-C was pressed (raw mode turns Ctrl-C into
    /// a key, not a signal). Resizes are picked up by the next draw.
    pub fn quit_requested(&mut self) -> anyhow::Result<bool> {
        while event::poll(Duration::ZERO)? {
            if let Event::Key(k) = event::read()? {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub fn draw(&mut self, i: &Interval) -> anyhow::Result<()> {
        let title = self.title.clone();
        remember(&mut self.requests, i.requests_per_s.round() as u64);
        remember(&mut self.reading, i.reading_now);
        let (requests, reading) = (&self.requests, &self.reading);
        self.term.draw(|f| {
            let alert_lines = i.alerts.len().max(1) as u16;
            let [head, sparks, funcs, workers, ages, clients] = Layout::vertical([
                Constraint::Length(alert_lines + 2),
                Constraint::Length(5),
                Constraint::Percentage(30),
                Constraint::Percentage(30),
                Constraint::Length(3),
                Constraint::Min(4),
            ])
            .areas(f.area());
            let alert = if i.alerts.is_empty() {
                Paragraph::new(format!("t = {:.0} s   no alerts", i.t))
            } else {
                Paragraph::new(
                    i.alerts
                        .iter()
                        .map(|a| Line::from(format!("ALERT {}", a.message)))
                        .collect::<Vec<_>>(),
                )
                .style(Style::default().fg(Color::Red).add_modifier(Modifier::BOLD))
            };
            f.render_widget(
                alert.block(Block::default().borders(Borders::ALL).title(title)),
                head,
            );
            let [left, right] =
                Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(sparks);
            for (area, values, now, what, colour) in [
                (
                    left,
                    requests,
                    i.requests_per_s.round() as u64,
                    "requests/s",
                    Color::Blue,
                ),
                (
                    right,
                    reading,
                    i.reading_now,
                    "workers reading requests",
                    Color::Yellow,
                ),
            ] {
                let shown = newest(values, area.width);
                let peak = shown.iter().copied().max().unwrap_or(0);
                f.render_widget(
                    Sparkline::default()
                        .data(&shown)
                        .max(peak.max(1))
                        .style(Style::default().fg(colour))
                        .block(
                            Block::default()
                                .borders(Borders::ALL)
                                .title(format!(" {what}: {now} now, peak {peak} ")),
                        ),
                    area,
                );
            }
            let bold = Style::default().add_modifier(Modifier::BOLD);
            let rows = i.functions.iter().map(|r| {
                Row::new(vec![
                    r.function.clone(),
                    format!("{:.0}", r.calls_per_s),
                    format::ns(r.mean_ns),
                    format::ns(r.p99_ns),
                ])
            });
            f.render_widget(
                Table::new(
                    rows,
                    [
                        Constraint::Fill(3),
                        Constraint::Fill(1),
                        Constraint::Fill(1),
                        Constraint::Fill(1),
                    ],
                )
                .header(Row::new(["function", "calls/s", "mean", "p99"]).style(bold))
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" functions (last interval) "),
                ),
                funcs,
            );
            let rows = i.workers.iter().map(|w| {
                Row::new(vec![
                    format!("{}/{}", w.pid, w.tid),
                    w.phase.map_or("?", |p| p.name()).to_string(),
                    format::ns(w.phase_ns),
                    w.function.clone(),
                    w.client.clone().unwrap_or_default(),
                ])
            });
            f.render_widget(
                Table::new(
                    rows,
                    [
                        Constraint::Fill(1),
                        Constraint::Fill(1),
                        Constraint::Fill(1),
                        Constraint::Fill(2),
                        Constraint::Fill(2),
                    ],
                )
                .header(Row::new(["pid/tid", "phase", "for", "in call", "client"]).style(bold))
                .block(Block::default().borders(Borders::ALL).title(format!(
                    " workers: {} ({}) ",
                    i.workers.len(),
                    by_phase(i)
                ))),
                workers,
            );
            let ages_text = i
                .in_flight
                .iter()
                .map(|b| format!("{}: {}", b.age, b.calls))
                .collect::<Vec<_>>()
                .join("   ");
            f.render_widget(
                Paragraph::new(ages_text).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" calls in flight by age "),
                ),
                ages,
            );
            let rows = i.clients.iter().map(|c| {
                Row::new(vec![
                    c.address.clone(),
                    format::ns(c.worker_ns),
                    c.workers_now.to_string(),
                    c.connections.to_string(),
                ])
            });
            f.render_widget(
                Table::new(
                    rows,
                    [
                        Constraint::Fill(2),
                        Constraint::Fill(1),
                        Constraint::Fill(1),
                        Constraint::Fill(1),
                    ],
                )
                .header(
                    Row::new(["client", "worker time held", "workers now", "connections"])
                        .style(bold),
                )
                .block(Block::default().borders(Borders::ALL).title(" clients ")),
                clients,
            );
        })?;
        Ok(())
    }

    pub fn leave(mut self) -> anyhow::Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> anyhow::Result<()> {
        if !self.left {
            self.left = true;
            disable_raw_mode()?;
            execute!(self.term.backend_mut(), LeaveAlternateScreen)?;
            self.term.show_cursor()?;
        }
        Ok(())
    }
}

impl Drop for Screen {
    /// An error or panic path must not leave the terminal in raw mode.
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// The last interval as plain text, printed once the view is closed.
pub fn as_text(i: &Interval) -> String {
    let mut s = String::new();
    for a in &i.alerts {
        s.push_str(&format!("ALERT {}\n", a.message));
    }
    s.push_str(&format!(
        "{} workers busy at the end ({})",
        i.workers.len(),
        by_phase(i)
    ));
    if let Some(w) = i.workers.first() {
        s.push_str(&format!(
            "; longest: {} for {}",
            w.function,
            format::ns(w.for_ns)
        ));
    }
    s.push('\n');
    for c in i.clients.iter().take(5) {
        s.push_str(&format!(
            "client {:<40} worker time {:>10}, {} workers now, {} connections\n",
            c.address,
            format::ns(c.worker_ns),
            c.workers_now,
            c.connections
        ));
    }
    s
}

/// "150 reading request, 2 handler": the workers by phase, most first.
fn by_phase(i: &Interval) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for w in &i.workers {
        let name = w.phase.map_or("phase unknown", |p| p.name());
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(n, c)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
