//! Globs matched like Python's `fnmatch.fnmatchcase` (the incumbent's filter semantics): `*` any
//! sequence (including `/` and `:`), `?` one character, `[abc]`, `[a-z]`, `[!abc]` one character of (or
//! not of) a set; an unclosed `[` and every other character stand for themselves. The Lambda's
//! `SOCI_FILTERS` and the CLI's `sync --filter` both use them.

/// One glob, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    AnySequence,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

impl Glob {
    /// Compiles a glob (every string is a valid glob, as with `fnmatch`).
    pub fn new(pattern: &str) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::AnySequence) {
                        tokens.push(Token::AnySequence);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyChar);
                    i += 1;
                }
                '[' => match parse_class(&chars, i + 1) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Literal('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Glob { source: pattern.to_owned(), tokens }
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the glob matches the whole of `text`.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0, 0);
        // Where to resume after the last `*`: (pattern position after it, text position it stopped at).
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::AnySequence) => {
                    backtrack = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(token) if token.matches_char(text[t]) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
            match backtrack {
                Some((after_star, star_text)) => {
                    // Let the last `*` take one more character and try again from there.
                    p = after_star;
                    t = star_text + 1;
                    backtrack = Some((after_star, t));
                }
                None => return false,
            }
        }
        self.tokens[p..].iter().all(|token| *token == Token::AnySequence)
    }

    /// Whether the glob can match some string containing `c`: it needs `c` or a wildcard that can stand
    /// for it.
    pub fn can_match_char(&self, c: char) -> bool {
        self.tokens.iter().any(|token| match token {
            Token::Literal(l) => *l == c,
            Token::AnyChar | Token::AnySequence => true,
            Token::Class { .. } => token.matches_char(c),
        })
    }
}

impl Token {
    fn matches_char(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyChar => true,
            Token::AnySequence => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
            }
        }
    }
}

/// Parses a `[...]` set starting after its `[`; `None` if it is never closed (then `[` is literal).
/// As in `fnmatch`: a leading `!` negates; a `]` right after `[` or `[!` is a member; `a-z` is a range
/// (an inverted range matches nothing); a `-` first or last is a member.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let body_start = i;
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    while i < chars.len() && chars[i] != ']' {
        i += 1;
    }
    if i >= chars.len() {
        return None;
    }
    let body = &chars[body_start..i];
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            ranges.push((body[k], body[k + 2]));
            k += 3;
        } else {
            ranges.push((body[k], body[k]));
            k += 1;
        }
    }
    Some((Token::Class { negated, ranges }, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (glob, subject, matches): fnmatch.fnmatchcase(subject, glob) in Python gives the same answers.
    const GLOBS: &[(&str, &str, bool)] = &[
        ("*:*", "app:latest", true),
        ("*:*", "team/app:1.0", true),
        ("*:*", "app:", true),
        ("*", "team/app:1.0", true),
        ("*:latest", "team/sub/app:latest", true),
        ("*:latest", "app:latest-soci", false),
        ("prod*:latest", "prod-api:latest", true),
        ("prod*:latest", "prod/api:latest", true),
        ("prod*:latest", "dev/prod-api:latest", false),
        ("prod*:latest", "prod-api:v1", false),
        ("dev:*", "dev:anything", true),
        ("dev:*", "dev:", true),
        ("dev:*", "dev/app:1", false),
        ("team/*", "team/app:1.0", true),
        ("team/*", "team:1.0", false),
        ("team*", "team/app:1.0", true),
        ("*app", "team/app:app", true),
        ("*app", "team/app:1.0", false),
        ("app:v?", "app:v1", true),
        ("app:v?", "app:v10", false),
        ("app:v[0-9]", "app:v7", true),
        ("app:v[0-9]", "app:vx", false),
        ("app:v[!0-9]", "app:vx", true),
        ("app:v[!0-9]", "app:v7", false),
        ("app:[]]", "app:]", true),
        ("app:[!]]", "app:x", true),
        ("app:[a-]", "app:-", true),
        ("app:[z-a]", "app:m", false),
        ("app:[abc", "app:[abc", true),
        ("app:[abc", "app:a", false),
        ("a*b*c:*", "axxbyyc:t", true),
        ("a*b*c:*", "axxbyy:t", false),
        ("**:**", "x:y", true),
        ("App:*", "app:1", false),
        ("app:1.0", "app:1.0", true),
        ("app:1.0", "app:1x0", false),
        ("*:*-soci", "app:1.0-soci", true),
        ("a\\b:*", "a\\b:t", true),
        ("[*]:*", "*:t", true),
        ("[*]:*", "a:t", false),
    ];

    #[test]
    fn globs_match_like_fnmatchcase() {
        for (glob, subject, expected) in GLOBS {
            assert_eq!(Glob::new(glob).matches(subject), *expected, "{glob:?} vs {subject:?}");
        }
    }
}
