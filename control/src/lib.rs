//! The warmfleet control plane: the registration, deregistration and record-metric Lambdas.
//! Built in issue 5; this crate holds their shared code once it exists.
