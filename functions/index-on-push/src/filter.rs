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

use app::glob::Glob;

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
            if !glob.can_match_char(':') {
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

    /// Whether some tag of `repository` may be selected, for listing repositories to reconcile. A glob
    /// with a literal `:` (outside `[...]`) settles it by its repository part, since neither repository
    /// names nor tags hold a `:`; one without may match when the repository starts with the glob's
    /// literal prefix (what comes before its first wildcard: `prod/*` may select `prod/api`, never
    /// `team/app`); the tags are checked one by one later.
    /// An exclusion whose repository part matches and whose tag part is `*` rules the repository out, as
    /// does one without `:` that ends in `*` and matches the name (its `*` takes `:TAG` too).
    pub fn may_select_repository(&self, repository: &str) -> bool {
        let included = self.include.iter().any(|glob| match split_at_colon(glob.as_str()) {
            Some((repo, _)) => Glob::new(repo).matches(repository),
            None => repository.starts_with(literal_prefix(glob.as_str())),
        });
        let excluded = self.exclude.iter().any(|glob| match split_at_colon(glob.as_str()) {
            Some((repo, tag)) => tag == "*" && Glob::new(repo).matches(repository),
            None => glob.as_str().ends_with('*') && glob.matches(repository),
        });
        included && !excluded
    }

    fn describe_include(&self) -> String {
        self.include.iter().map(Glob::as_str).collect::<Vec<_>>().join(",")
    }
}

/// What a glob matches literally before its first wildcard (`*`, `?` or `[`).
fn literal_prefix(pattern: &str) -> &str {
    &pattern[..pattern.find(['*', '?', '[']).unwrap_or(pattern.len())]
}

/// `pattern` split at its first `:` outside a `[...]` set (fnmatch's rules: `]` right after `[` or
/// `[!` is a member; an unclosed `[` is literal).
fn split_at_colon(pattern: &str) -> Option<(&str, &str)> {
    let bytes = pattern.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b':' => return Some((&pattern[..at], &pattern[at + 1..])),
            b'[' => {
                let mut end = at + 1;
                if bytes.get(end) == Some(&b'!') {
                    end += 1;
                }
                if bytes.get(end) == Some(&b']') {
                    end += 1;
                }
                match bytes[end.min(bytes.len())..].iter().position(|&b| b == b']') {
                    Some(close) => at = end + close + 1,
                    None => at += 1,
                }
            }
            _ => at += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn repositories_to_reconcile_follow_the_repository_part() {
        let table: &[(&str, &str, bool)] = &[
            ("*:*", "any/repo", true),
            ("team/*:*", "team/app", true),
            ("team/*:*", "other/app", false),
            ("prod*:latest", "prod-api", true),
            ("prod*:latest", "dev", false),
            ("app[:]x:*", "app", false),
            ("app[:]x", "app", true),
            // No literal colon: the literal prefix decides.
            ("te*st", "team", true),
            ("prod/*", "prod/api", true),
            ("prod/*", "team/app", false),
            ("*app", "team/app", true),
            ("*:*,!scratch/*", "scratch/tmp", false),
            ("*:*,!scratch/*:*", "scratch/tmp", false),
            ("*:*,!scratch/*:*-debug", "scratch/tmp", true),
            ("*:*,!*:*-debug", "team/app", true),
        ];
        for (filters, repository, expected) in table {
            let filters = Filters::parse(filters).unwrap();
            assert_eq!(filters.may_select_repository(repository), *expected, "{filters:?} {repository}");
        }
        assert_eq!(split_at_colon("a[]:]b:c"), Some(("a[]:]b", "c")));
        assert_eq!(split_at_colon("a[:b"), Some(("a[", "b")));
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
