//! The `ipvlan` CNI plugin.
fn main() {
    cni::skel::run(parent_link::ParentLink(parent_link::Kind::Ipvlan))
}
