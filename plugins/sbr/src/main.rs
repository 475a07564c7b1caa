//! The `sbr` CNI plugin.
fn main() {
    cni::skel::run(sbr::Sbr)
}
