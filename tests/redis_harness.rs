//! The Redis harness itself works: a real server answers and goes away on kill.

mod common;

#[test]
fn spawned_redis_answers_and_stops() {
    let mut server = common::RedisServer::start();
    let mut con = server.con();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("set");
    let v: String = redis::cmd("GET").arg("k").query(&mut con).expect("get");
    assert_eq!(v, "v");
    server.kill();
    assert!(redis::cmd("PING").query::<String>(&mut con).is_err());
}
