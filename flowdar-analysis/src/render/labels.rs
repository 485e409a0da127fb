//! Text placement without overlaps. Each label is tried at its preferred
//! spots in turn, in full first and then shortened (with `…`), and left
//! out when nothing fits: the full text stays in the element's hover
//! title. Widths are estimated for the diagram's monospace font (DejaVu
//! Sans Mono: 0.602 em a character), rounded up so that an estimate never
//! falls short of what a browser measures.

/// Width of a character at the diagram's 11 px, rounded up.
const CHAR_W: f64 = 6.7;
/// Above and below the baseline, at 11 px (the font's 0.93 and 0.24 em,
/// rounded up).
const ASCENT: f64 = 11.0;
const DESCENT: f64 = 3.5;
/// The shortest form worth drawing.
const MIN_CHARS: usize = 6;

#[derive(Debug, Clone, Copy)]
struct Box2 {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Box2 {
    fn of(x: f64, y: f64, chars: usize, scale: f64) -> Self {
        Self {
            x0: x,
            y0: y - ASCENT * scale,
            x1: x + chars as f64 * CHAR_W * scale,
            y1: y + DESCENT * scale,
        }
    }

    fn hits(&self, o: &Box2) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

/// A label as placed: where its text starts, its baseline, what it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub x: u64,
    pub y: u64,
    pub text: String,
}

/// The boxes of the text drawn so far, within a width.
#[derive(Debug)]
pub struct Labels {
    placed: Vec<Box2>,
    width: f64,
}

impl Labels {
    pub fn new(width: u64) -> Self {
        Self {
            placed: Vec::new(),
            width: width as f64,
        }
    }

    /// Claims the box of text drawn regardless (titles, lifeline names),
    /// starting at `x`, at `scale` times the diagram's font size.
    pub fn reserve(&mut self, x: f64, y: u64, text: &str, scale: f64) {
        self.placed
            .push(Box2::of(x, y as f64, text.chars().count(), scale));
    }

    /// Places `text` at the first of `spots` where it fits in full, else
    /// at the first where a shortened form fits; `None` when nothing does.
    pub fn place(&mut self, text: &str, spots: &[(u64, u64)]) -> Option<Placed> {
        let full = text.chars().count();
        for &(x, y) in spots {
            if let Some(n) = self.fits(x, y, full) {
                if n == full {
                    return Some(self.take(x, y, text.to_string(), n));
                }
            }
        }
        for &(x, y) in spots {
            if let Some(n) = self.fits(x, y, full) {
                let short: String = text.chars().take(n - 1).chain(['…']).collect();
                return Some(self.take(x, y, short, n));
            }
        }
        None
    }

    /// The most characters (up to `want`) that fit at (x, y), if at least
    /// the shortest form does.
    fn fits(&self, x: u64, y: u64, want: usize) -> Option<usize> {
        let (x, y) = (x as f64, y as f64);
        let room = ((self.width - 2.0 - x) / CHAR_W).floor().max(0.0) as usize;
        let mut n = want.min(room);
        if n < want.min(MIN_CHARS) {
            return None;
        }
        // Shorten until clear of everything already drawn.
        while n >= want.min(MIN_CHARS) && n > 0 {
            let b = Box2::of(x, y, n, 1.0);
            match self
                .placed
                .iter()
                .filter(|o| b.hits(o))
                .map(|o| o.x0)
                .reduce(f64::min)
            {
                None => return Some(n),
                Some(left) if left > x => {
                    let m = ((left - x) / CHAR_W).floor() as usize;
                    if m >= n {
                        return None;
                    }
                    n = m;
                }
                Some(_) => return None,
            }
        }
        None
    }

    /// How many boxes are placed (a mark for [`Labels::last_end`]).
    pub fn len(&self) -> usize {
        self.placed.len()
    }

    /// Where the last box placed after `mark` ends, if one was.
    pub fn last_end(&self, mark: usize) -> Option<u64> {
        self.placed[mark..].last().map(|b| b.x1.ceil() as u64)
    }

    fn take(&mut self, x: u64, y: u64, text: String, n: usize) -> Placed {
        self.placed.push(Box2::of(x as f64, y as f64, n, 1.0));
        Placed { x, y, text }
    }
}

#[cfg(test)]
mod tests {
    use super::Labels;

    #[test]
    fn moves_then_shortens_then_gives_up() {
        let mut l = Labels::new(400);
        l.reserve(100.0, 50, "ap_run_process_connection", 1.0);
        // Clear spot: in full.
        let a = l.place("hello", &[(10, 100)]).unwrap();
        assert_eq!((a.x, a.y, a.text.as_str()), (10, 100, "hello"));
        // The first spot collides, the second is clear: moved.
        let b = l.place("hand-off conn 1", &[(150, 52), (150, 70)]).unwrap();
        assert_eq!((b.y, b.text.as_str()), (70, "hand-off conn 1"));
        // Runs into the reserved text: shortened to end before it.
        let c = l.place("apr_socket_recv(sock 1)", &[(10, 48)]).unwrap();
        assert!(
            c.text.ends_with('…') && c.text.chars().count() == 13,
            "{c:?}"
        );
        // Starts inside it: nothing fits.
        assert_eq!(l.place("x", &[(120, 50)]), None);
        // Past the right edge: shortened to the width.
        let d = l.place(&"y".repeat(80), &[(10, 200)]).unwrap();
        assert_eq!(d.text.chars().count(), 57);
    }
}
