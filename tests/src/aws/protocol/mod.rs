//! The AWS wire protocols the services speak, apart from what they mean: awsJson
//! (`json`) and awsQuery (`query`). CloudWatch's rpc-v2-cbor is in `cloudwatch::wire`.

pub mod json;
pub mod query;
