*** Settings ***
Documentation     Scenarios for the project's own tests of the load generator's self-judgement
...               (tests/integration/test_generator_health.py): a generator too slow for its
...               schedule makes a run inconclusive; a server that stops reading fails.

Resource          ../../../resources/throughput.resource

Suite Setup       Set Up Apex Target
Suite Teardown    Tear Down Apex Target
Test Teardown     Finish Test


*** Variables ***
${STARVED_RATE}    ${80000}
${DEAF_RATE}       ${2000}


*** Test Cases ***
A Generator That Cannot Keep Its Schedule Makes The Run Inconclusive
    [Documentation]    Far more than this process can send on its core: rate and latency
    ...    cannot be judged, loss still is.
    Run Load    ${STARVED_RATE}    1 s    name=starved
    Get Load Figure    achieved ratio    >=    0.9
    Get Load Latency    p95    <=    200 ms
    Get Load Figure    lost    ==    0

A Server That Stops Reading Fails As The Server's Fault
    [Documentation]    Large chat messages to a server that stops reading: the writes wait, the
    ...    connection stalls, the undelivered messages are the server's fault.
    Run Load    ${DEAF_RATE}    2 s    name=deaf    message_type=user_message    message_size=32768
    ...    drain_timeout=1 s
    Run Keyword And Continue On Failure    Get Load Latency    p95    <=    200 ms
    Get Load Figure    delivery ratio    >=    0.95
