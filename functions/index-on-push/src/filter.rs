//! Which pushes to index: `SOCI_FILTERS`, comma-separated `REPOSITORY:TAG` globs.
//!
//! The semantics are the incumbent's (the CloudFormation SOCI index builder's Python filter), so a
//! filter list carries over unchanged: each glob is matched like Python's `fnmatch.fnmatchcase` against
//! the whole `repository:tag` string (the tag is empty for a push without one), and an image is selected
//! if any glob matches. `*` matches any sequence, including `/` and `:` (so `team/*` matches
//! `team/app:1.0` and `*:*` matches everything), `?` one character, `[abc]`, `[a-z]` and `[!abc]` one
//! character of (or not of) a set; an unclosed `[` and every other character stand for themselves.
//!
//! One addition: a glob starting with `!` is an exclusion, checked after the matches: an image that
//! matches an exclusion is never selected (`*:*,!scratch/*` selects everything outside `scratch/`). A
//! list with exclusions only selects everything the exclusions leave. Whitespace around globs is ignored,
//! and an empty or unset list means `*:*`.

use std::fmt;

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

    /// Whether the glob can match some `repository:tag` string: it needs a `:` or a wildcard that can
    /// stand for one.
    fn can_match_a_colon(&self) -> bool {
        self.tokens.iter().any(|token| match token {
            Token::Literal(c) => *c == ':',
            Token::AnyChar | Token::AnySequence => true,
            Token::Class { .. } => token.matches_char(':'),
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

/// The parsed `SOCI_FILTERS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filters {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
}

/// A filter that can never select anything, named for the cold-start error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

/// The default filter list.
pub const DEFAULT_FILTERS: &str = "*:*";

impl Default for Filters {
    fn default() -> Filters {
        Filters { include: vec![Glob::new(DEFAULT_FILTERS)], exclude: Vec::new() }
    }
}

impl Filters {
    /// Parses a comma-separated list. A glob that cannot match any `repository:tag` (no `:` and no
    /// wildcard, e.g. `myrepo`, a likely typo for `myrepo:*`) is an error rather than a silent no-op.
    pub fn parse(list: &str) -> Result<Filters, FilterError> {
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let (negated, pattern) = match item.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, item),
            };
            if pattern.is_empty() {
                return Err(FilterError(format!("{item:?} excludes nothing (expected !REPOSITORY:TAG)")));
            }
            let glob = Glob::new(pattern);
            if !glob.can_match_a_colon() {
                return Err(FilterError(format!(
                    "{pattern:?} can never match: filters are matched against REPOSITORY:TAG \
                     (did you mean \"{pattern}:*\"?)"
                )));
            }
            if negated {
                exclude.push(glob);
            } else {
                include.push(glob);
            }
        }
        if include.is_empty() {
            include.push(Glob::new(DEFAULT_FILTERS));
        }
        Ok(Filters { include, exclude })
    }

    /// `Ok` if `repository:tag` is selected, else why not. `tag` is `""` for a push without a tag.
    pub fn check(&self, repository: &str, tag: &str) -> Result<(), String> {
        let subject = format!("{repository}:{tag}");
        let Some(_) = self.include.iter().find(|glob| glob.matches(&subject)) else {
            return Err(format!("{subject} matches no filter of SOCI_FILTERS ({})", self.describe_include()));
        };
        if let Some(glob) = self.exclude.iter().find(|glob| glob.matches(&subject)) {
            return Err(format!("{subject} is excluded by filter !{}", glob.as_str()));
        }
        Ok(())
    }

    /// Whether `repository:tag` is selected.
    pub fn selects(&self, repository: &str, tag: &str) -> bool {
        self.check(repository, tag).is_ok()
    }

    fn describe_include(&self) -> String {
        self.include.iter().map(Glob::as_str).collect::<Vec<_>>().join(",")
    }
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

    #[test]
    fn filter_lists_or_their_globs_and_apply_exclusions_last() {
        let filters = Filters::parse("prod*:latest, dev:*").unwrap();
        assert!(filters.selects("prod-api", "latest"));
        assert!(filters.selects("dev", "x"));
        assert!(!filters.selects("stage", "latest"));

        let filters = Filters::parse("*:*,!scratch/*,!*:*-debug").unwrap();
        assert!(filters.selects("team/app", "1.0"));
        assert!(!filters.selects("scratch/app", "1.0"));
        assert!(!filters.selects("team/app", "1.0-debug"));
        assert_eq!(
            filters.check("scratch/app", "1.0").unwrap_err(),
            "scratch/app:1.0 is excluded by filter !scratch/*"
        );

        // Exclusions alone: everything else.
        let filters = Filters::parse("!test-*:*").unwrap();
        assert!(filters.selects("app", "1"));
        assert!(!filters.selects("test-app", "1"));
    }

    #[test]
    fn tagless_pushes_match_with_an_empty_tag() {
        let filters = Filters::parse("app:*").unwrap();
        assert!(filters.selects("app", ""));
        let filters = Filters::parse("app:?*").unwrap();
        assert!(!filters.selects("app", ""));
        assert_eq!(filters.check("app", "").unwrap_err(), "app: matches no filter of SOCI_FILTERS (app:?*)");
    }

    #[test]
    fn empty_lists_mean_everything() {
        assert_eq!(Filters::parse("").unwrap(), Filters::default());
        assert_eq!(Filters::parse(" , ,").unwrap(), Filters::default());
        assert!(Filters::default().selects("any/repo", "any-tag"));
    }

    #[test]
    fn globs_that_can_never_match_are_errors() {
        let error = Filters::parse("app:*,myrepo").unwrap_err();
        assert!(error.0.contains("\"myrepo\" can never match"), "{error}");
        assert!(error.0.contains("myrepo:*"), "{error}");
        assert!(Filters::parse("!").is_err());
        // A wildcard can stand for the colon.
        assert!(Filters::parse("prod*").unwrap().selects("prod", "1"));
        assert!(Filters::parse("app[:]1").unwrap().selects("app", "1"));
    }
}
