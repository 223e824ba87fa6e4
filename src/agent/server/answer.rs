//! The agent's answer, made to fit in one frame.

use super::super::protocol::{encode_payload, FrameError, Message, ResponseBody};

/// Pure: the response, if need be without the reverse checks' hop data so that it fits in one
/// frame (the verdicts matter more than the details); an error if even that is too large.
pub fn fit_response(mut response: ResponseBody) -> Result<Message, FrameError> {
    let respond = |r: &ResponseBody| -> Result<Message, FrameError> {
        let body = serde_json::to_string(r).map_err(|e| FrameError::Malformed(e.to_string()))?;
        Ok(Message::Response { body })
    };
    let msg = respond(&response)?;
    if encode_payload(&msg).is_ok() {
        return Ok(msg);
    }
    for check in &mut response.reverse {
        for hop in &mut check.hops {
            if !hop.data.is_empty() {
                hop.data.clear();
                hop.detail
                    .push_str(" [hop data dropped: answer over the frame limit]");
            }
        }
    }
    let msg = respond(&response)?;
    encode_payload(&msg)?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol;
    use crate::model::{CheckResult, Direction, HopKind, HopResult, Status};

    #[test]
    fn oversize_answers_drop_hop_data_then_give_up() {
        let check = |data: usize, detail: usize| {
            let hop = HopResult::pass(HopKind::Tcp, "d".repeat(detail))
                .with_data("blob", "x".repeat(data));
            CheckResult {
                name: "c".into(),
                kind: "tcp".into(),
                target: "tcp://h:1".into(),
                from: None,
                to: None,
                direction: Direction::Reverse,
                status: Status::Pass,
                hops: vec![hop],
            }
        };
        let body = |checks: Vec<CheckResult>| ResponseBody {
            agent: "a".into(),
            reverse: checks,
            ..Default::default()
        };
        let decode = |m: &Message| -> ResponseBody {
            let Message::Response { body } = m else {
                panic!("not a response")
            };
            protocol::parse_body(body).unwrap()
        };
        // Small: unchanged.
        let m = fit_response(body(vec![check(10, 10)])).unwrap();
        assert_eq!(decode(&m).reverse[0].hops[0].data["blob"], "x".repeat(10));
        // Bulky data: verdict kept, data dropped, detail says so.
        let m = fit_response(body(vec![check(40_000, 10), check(40_000, 10)])).unwrap();
        let back = decode(&m);
        assert_eq!(back.reverse.len(), 2);
        assert!(back.reverse[0].hops[0].data.is_empty());
        assert!(back.reverse[0].hops[0].detail.contains("hop data dropped"));
        assert_eq!(back.reverse[0].hops[0].status, Status::Pass);
        // Too large even without data: an error, not a truncated frame.
        assert!(fit_response(body(vec![check(0, 70_000)])).is_err());
    }
}
