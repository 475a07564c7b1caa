//! The TCP transport: hickory-server holds the connections (many queries per
//! connection, a task each, an idle timeout, so one slow client stalls only itself) and
//! hands each request to [`Handler`], which answers it from [`crate::answer`] or
//! forwards it. UDP is [`crate::udp`]'s.

use hickory_proto::op::{Message, Metadata, ResponseCode};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::answer::{edns, refusal, Handler};

/// One request: the same checks and decisions as [`crate::udp`]'s.
async fn respond<R: ResponseHandler>(
    handler: &Handler,
    request: &Request,
    mut rh: R,
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    let edns = request.edns.as_ref().map(|_| edns());
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(e) = &edns {
        builder.edns(e);
    }
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.recursion_available = true;
    let m = &request.metadata;
    if let Some(code) = refusal(m.op_code, m.message_type, request.queries.len()) {
        meta.response_code = code;
        return rh.send_response(builder.build_no_records(meta)).await;
    }
    let Ok(info) = request.request_info() else {
        meta.response_code = ResponseCode::FormErr;
        return rh.send_response(builder.build_no_records(meta)).await;
    };
    let asked = info.query.original();
    match handler
        .decide(request.src().ip(), asked.name(), asked.query_type())
        .into_local(asked.name())
    {
        Ok((code, answers, authorities)) => {
            meta.authoritative = code != ResponseCode::Refused;
            meta.response_code = code;
            rh.send_response(builder.build(meta, &answers, &[], &authorities, &[]))
                .await
        }
        Err(upstreams) => {
            let tcp = request.protocol() == Protocol::Tcp;
            let max = usize::from(request.max_payload().max(512));
            let reply = handler
                .forwarder
                .forward(request.as_slice(), &upstreams, tcp, max)
                .await
                .and_then(|r| Message::from_vec(&r).ok());
            match reply {
                Some(m) => {
                    let mut meta = m.metadata;
                    meta.id = request.metadata.id;
                    rh.send_response(builder.build(
                        meta,
                        &m.answers,
                        &m.authorities,
                        &[],
                        &m.additionals,
                    ))
                    .await
                }
                None => {
                    meta.response_code = ResponseCode::ServFail;
                    rh.send_response(builder.build_no_records(meta)).await
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        match respond(self, request, response_handle).await {
            Ok(info) => info,
            Err(_) => {
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata: meta,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}
