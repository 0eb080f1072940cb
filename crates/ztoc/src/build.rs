//! Placeholder.
use crate::{Error, Ztoc};
/// Placeholder.
#[derive(Clone, Debug)]
pub struct BuildOptions {}
/// Placeholder.
#[derive(Clone, Copy, Debug)]
pub enum LayerFormat {}
/// Placeholder.
pub fn build_ztoc(_r: impl std::io::Read, _o: &BuildOptions) -> Result<Ztoc, Error> {
    unimplemented!()
}
