//! Assignment of parameters to groups: the first group whose glob matches the parameter's name
//! wins; parameters no group matches go to the default group.

use globset::{Glob, GlobMatcher};

use super::config::GroupConfig;
use crate::{Error, Result};

/// How many parameter names an error message lists.
const SHOWN: usize = 6;

/// For each name, the index of the first group whose pattern matches it (`None`: the default group).
///
/// Errors when a pattern is not a valid glob, or when a group receives no parameter: either its
/// pattern matches no name (the message lists some names) or every name it matches is claimed by an
/// earlier group (the message names that group).
pub(super) fn assign(names: &[String], groups: &[GroupConfig]) -> Result<Vec<Option<usize>>> {
    let matchers = groups
        .iter()
        .enumerate()
        .map(|(i, g)| compile(i, &g.pattern))
        .collect::<Result<Vec<_>>>()?;
    let owners: Vec<Option<usize>> = names
        .iter()
        .map(|name| matchers.iter().position(|m| m.is_match(name)))
        .collect();
    for (i, (group, matcher)) in groups.iter().zip(&matchers).enumerate() {
        if owners.contains(&Some(i)) {
            continue;
        }
        let shadowed = names
            .iter()
            .zip(&owners)
            .find(|(name, _)| matcher.is_match(name));
        return Err(match shadowed {
            Some((name, Some(owner))) => Error::config(format!(
                "[optim] groups[{i}]: pattern \"{}\" matches only parameters that earlier groups already \
                 take (first match wins), e.g. {name} goes to groups[{owner}] (pattern \"{}\"); \
                 put the more specific pattern first",
                group.pattern, groups[*owner].pattern
            )),
            _ => Error::config(format!(
                "[optim] groups[{i}]: pattern \"{}\" matches no trainable parameter; the {} parameters \
                 include {} (patterns are globs over the whole dot-separated name, e.g. \"blocks.0.*\")",
                group.pattern,
                names.len(),
                examples(names)
            )),
        });
    }
    Ok(owners)
}

/// For each name, whether the glob `pattern` matches it; an error when it matches none or is not
/// a glob.
pub(super) fn matching(names: &[String], pattern: &str) -> Result<Vec<bool>> {
    let matcher = Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::config(format!("\"{pattern}\" is not a valid glob: {e}")))?;
    let hits: Vec<bool> = names.iter().map(|n| matcher.is_match(n)).collect();
    if !hits.contains(&true) {
        return Err(Error::config(format!(
            "pattern \"{pattern}\" matches no trainable parameter; the {} parameters include {}",
            names.len(),
            examples(names)
        )));
    }
    Ok(hits)
}

fn compile(index: usize, pattern: &str) -> Result<GlobMatcher> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| {
            Error::config(format!(
                "[optim] groups[{index}]: pattern \"{pattern}\" is not a valid glob: {e}"
            ))
        })
}

fn examples(names: &[String]) -> String {
    let mut shown: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
    if names.len() > SHOWN {
        shown.push("...");
    }
    if shown.is_empty() {
        "none (the VarStore has no trainable variable)".to_string()
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_match_wins_and_star_crosses_dots() {
        let params = names(&[
            "blocks.0.g.0.weight",
            "blocks.0.g.0.bias",
            "blocks.1.g.0.weight",
            "head.bias",
        ]);
        let groups = [GroupConfig::new("*.bias"), GroupConfig::new("blocks.0.*")];
        let owners = assign(&params, &groups).unwrap();
        assert_eq!(owners, [Some(1), Some(0), None, Some(0)]);
    }

    #[test]
    fn errors_name_the_pattern() {
        let params = names(&["blocks.0.weight", "blocks.1.weight"]);
        let err = assign(&params, &[GroupConfig::new("block.*")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"block.*\"") && err.contains("blocks.0.weight"),
            "{err}"
        );
        let groups = [GroupConfig::new("blocks.*"), GroupConfig::new("blocks.0.*")];
        let err = assign(&params, &groups).unwrap_err().to_string();
        assert!(
            err.contains("\"blocks.0.*\"") && err.contains("groups[0]"),
            "{err}"
        );
        let err = assign(&params, &[GroupConfig::new("blocks.[0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid glob"), "{err}");
    }
}
