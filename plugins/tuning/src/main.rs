//! The `tuning` CNI plugin.
fn main() {
    cni::skel::run(tuning::Tuning)
}
