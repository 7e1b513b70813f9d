//! The config string's options: `NAME=VALUE` pairs; options a plugin knows are taken out, the
//! rest are weights (see [`crate::weights`]).

use crate::weights;

/// A parsed config string.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The options the plugin asked for, with their values.
    pub known: Vec<(String, String)>,
    /// Everything else, as weights.
    pub weights: Vec<(String, u32)>,
}

impl Options {
    /// Parses `config`, taking out the options named in `names`.
    ///
    /// # Errors
    /// A weight that is not a number.
    pub fn parse(config: &str, names: &[&str]) -> Result<Self, String> {
        let mut o = Options::default();
        let mut rest = Vec::new();
        for p in config
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match p.split_once('=') {
                Some((k, v)) if names.contains(&k.trim()) => {
                    o.known.push((k.trim().into(), v.trim().into()))
                }
                _ => rest.push(p),
            }
        }
        o.weights = weights::parse(&rest.join(","))?;
        Ok(o)
    }

    /// An option's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.known
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
