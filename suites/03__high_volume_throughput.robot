*** Settings ***
Documentation     High-volume throughput: the platform answers what it is offered, up to its
...               sustained rate, in order on every connection, exactly once even when connections
...               drop; it signals overload and recovers from it; its latency percentiles stay
...               within target under a constant arrival rate; it scales to hundreds of connections
...               and its memory stays bounded.
...
...               Load is open-loop: each message has an intended send time, and latency runs from
...               it to the answer, so a stalled server cannot hide behind a slowed sender. The
...               parameters are the original plan's (docs/original-plans.md, suite 3) with durations
...               shortened for the mock; ``-V resources/variables/soak.py`` restores them.

Resource          ../resources/throughput.resource

Suite Setup       Set Up Apex Target
Suite Teardown    Tear Down Apex Target
Test Setup        Connect As A New Test User
Test Teardown     Finish Test

Test Tags         throughput


*** Variables ***
${MIN_ACHIEVED_RATIO}              0.9
${MIN_DELIVERY_RATIO}              0.95
${MIN_DELIVERY_ABOVE_SUSTAINED}    0.8
${FLOOD_MESSAGES}                  ${10000}
${FLOOD_RATE}                      ${5000}
${ORDER_CONNECTIONS}               ${10}
${ORDER_RATE_PER_CONNECTION}       ${100}
${ORDER_DURATION}                  2 s
${DROP_RATE}                       ${200}
${DROP_DURATION}                   3 s
${DROP_CONNECTIONS}                ${4}
${DROP_EVERY}                      ${50}
${BASELINE_RATE}                   ${1000}
${BASELINE_DURATION}               1 s
${BACKPRESSURE_SIGNAL_WITHIN}      5 s
${MIN_HIGH_PRIORITY_RATIO}         0.8
${MIN_RECOVERY_RATIO}              0.8
# The plan: 5,000 msg/s for 300 s (soak.py). Beside a CPU hog the generator fell behind at
# 5,000 msg/s over 10 connections (2 runs of 7), so the default is 3,000 for 5 s: as many
# messages, a longer window.
${LATENCY_RATE}                    ${3000}
${LATENCY_DURATION}                5 s
${LATENCY_CONNECTIONS}             ${10}
${MAX_P95}                         200 ms
${MEMORY_RATE}                     ${5000}
${MEMORY_DURATION}                 3 s
${MEMORY_CONNECTIONS}              ${10}
${MAX_SERVER_BYTES_PER_MESSAGE}    ${1024}
${MAX_SERVER_GROWTH_MB}            ${200}
${RECOVERY_CONNECTIONS}            ${20}
${RECOVERY_DROP_EVERY}             ${20}
${MAX_RECONNECT_TIME}              500 ms
# The plan's benchmark is sustained 7,500 and peak 10,000 msg/s (soak.py restores it). With
# the mock on the same 2-core machine, and another process busy on one core, the generator
# cannot offer that on time (the run would be inconclusive: it fell behind at 5,000-6,000 in
# 4 runs of 4, and at 4,000-5,000 in 1 of 5), so the default sustains 3,000 and peaks at
# 4,000; judged phases last 2 s, long enough that one scheduling hiccup cannot move a ratio
# by 10%.
${WARM_UP}                         1000/s for 1 s
${RAMP}                            1000..3000/s for 2 s
${SUSTAINED}                       3000/s for 2 s
${PEAK}                            4000/s for 2 s
${COOL_DOWN}                       2000/s for 1 s
${BENCHMARK_CONNECTIONS}           ${10}
${MIN_BENCHMARK_DELIVERY}          0.999


*** Test Cases ***
Throughput Keeps Up With The Offered Rate
    [Documentation]    Rate steps from 100 to 10,000 msg/s: up to the sustained target (5,000) the
    ...    server answers at least 90% of the offered rate and delivers 95%; above it, 80% must
    ...    still be delivered.
    [Template]    Offered Rate Should Be Sustained
    rate=100    min_achieved=${MIN_ACHIEVED_RATIO}    min_delivery=${MIN_DELIVERY_RATIO}
    rate=500    min_achieved=${MIN_ACHIEVED_RATIO}    min_delivery=${MIN_DELIVERY_RATIO}
    rate=1000    min_achieved=${MIN_ACHIEVED_RATIO}    min_delivery=${MIN_DELIVERY_RATIO}
    rate=2500    min_achieved=${MIN_ACHIEVED_RATIO}    min_delivery=${MIN_DELIVERY_RATIO}
    rate=5000    min_achieved=${MIN_ACHIEVED_RATIO}    min_delivery=${MIN_DELIVERY_RATIO}
    rate=7500    min_achieved=${NONE}    min_delivery=${MIN_DELIVERY_ABOVE_SUSTAINED}
    rate=10000    min_achieved=${NONE}    min_delivery=${MIN_DELIVERY_ABOVE_SUSTAINED}

Order Holds Under A 10,000-Message Flood
    [Documentation]    10,000 messages on one connection at ${FLOOD_RATE} msg/s: every one answered
    ...    once, in the order sent.
    Run Load    ${FLOOD_RATE}    ${{ ${FLOOD_MESSAGES} / ${FLOOD_RATE} }}    name=flood
    Every Load Message Should Be Answered Once In Order

Order Holds On Each Of Ten Connections
    [Documentation]    Ten connections sending ${ORDER_RATE_PER_CONNECTION} msg/s each: order is judged
    ...    per connection, as each sent it.
    Run Load    ${{ ${ORDER_RATE_PER_CONNECTION} * ${ORDER_CONNECTIONS} }}    ${ORDER_DURATION}
    ...    connections=${ORDER_CONNECTIONS}
    ...    name=ten-connections
    Every Load Message Should Be Answered Once In Order

Every Message Is Processed Exactly Once Despite Connection Drops
    [Documentation]    Connections reset by the network every ${DROP_EVERY} messages, and all cut at
    ...    once after a partition, reconnect and resend what was not answered, with the same
    ...    message_id: the server must process each exactly once (its agent state says so) and
    ...    the client must get one outcome for each.
    [Tags]    network
    Send Messages Over Connections The Network Keeps Resetting
    ...    ${DROP_RATE}    ${DROP_DURATION}    ${DROP_CONNECTIONS}    ${DROP_EVERY}    partition=${True}
    Load Should Answer Every Message Exactly Once

Overload Is Signalled And Service Recovers
    [Documentation]    A flood beyond the server's capacity gets queue_full within
    ...    ${BACKPRESSURE_SIGNAL_WITHIN}, high-priority messages still get through, and once the
    ...    flood ends throughput returns to at least ${MIN_RECOVERY_RATIO} of the baseline.
    ${baseline}    Measure Baseline Throughput
    Overload The Server
    Get Backpressure Signal Time    <=    ${BACKPRESSURE_SIGNAL_WITHIN}
    Get High Priority Delivery Ratio    >=    ${MIN_HIGH_PRIORITY_RATIO}
    Throughput Should Recover To Baseline    ${baseline}

Latency Percentiles Stay Within Target Under Constant Arrival Rate
    [Documentation]    ${LATENCY_RATE} msg/s for ${LATENCY_DURATION} over ${LATENCY_CONNECTIONS}
    ...    connections: delivered, with p50, p95 and p99 from the intended send time within
    ...    target, no degradation over the run, the server's memory growth within limits.
    Start Resource Monitor
    Run Load    ${LATENCY_RATE}    ${LATENCY_DURATION}    connections=${LATENCY_CONNECTIONS}    name=latency
    Get Load Figure    delivery ratio    >=    ${MIN_DELIVERY_RATIO}
    Latency Should Meet Its Percentile Targets
    Get Resource Figure    server    memory growth    <=    ${MAX_SERVER_GROWTH_MB}

Connections Scale From 1 To 500
    [Documentation]    1, 10, 50, 100, 250 and 500 concurrent connections under the same total load.
    [Template]    Connections Should Scale To
    connections=1
    connections=10
    connections=50
    connections=100
    connections=250
    connections=500

Memory Stays Bounded Under Sustained Load
    [Documentation]    ${MEMORY_RATE} msg/s for ${MEMORY_DURATION}: the server needs at most
    ...    ${MAX_SERVER_BYTES_PER_MESSAGE} bytes per message and gives its memory back after;
    ...    the client's memory stays bounded too (measured separately).
    Start Resource Monitor
    Run Load    ${MEMORY_RATE}    ${MEMORY_DURATION}    connections=${MEMORY_CONNECTIONS}    name=memory
    Get Load Figure    delivery ratio    >=    ${MIN_DELIVERY_RATIO}
    Memory Should Stay Bounded

Service Recovers From Connection Drops, A Partition And Overload
    [Documentation]    After connections are reset (one message in ${RECOVERY_DROP_EVERY}) and reconnect,
    ...    after a network partition heals, and after an overload, throughput returns to at
    ...    least ${MIN_RECOVERY_RATIO} of the baseline; every dropped connection is back within
    ...    ${MAX_RECONNECT_TIME}, and the partition costs neither messages nor connections.
    [Tags]    network
    ${baseline}    Measure Baseline Throughput
    Send Messages Over Connections The Network Keeps Resetting
    ...    ${BASELINE_RATE}    ${BASELINE_DURATION}    ${RECOVERY_CONNECTIONS}    ${RECOVERY_DROP_EVERY}
    Get Load Figure    reconnect time    <=    ${MAX_RECONNECT_TIME}
    Ride Out A Network Partition
    Overload The Server
    Throughput Should Recover To Baseline    ${baseline}

Phased Benchmark Meets Its Targets
    [Documentation]    Warm-up, ramp, sustained, peak and cool-down on one schedule: the peak phase
    ...    answers at least 90% of its rate, p95 stays within target, 99.9% are delivered.
    Run Load In Phases
    ...    warm-up=${WARM_UP}
    ...    ramp=${RAMP}
    ...    sustained=${SUSTAINED}
    ...    peak=${PEAK}
    ...    cool-down=${COOL_DOWN}
    ...    connections=${BENCHMARK_CONNECTIONS}
    ...    name=benchmark
    Get Load Figure    achieved ratio    >=    ${MIN_ACHIEVED_RATIO}    phase=peak
    Get Load Latency    p95    <=    ${MAX_P95}
    Get Load Figure    delivery ratio    >=    ${MIN_BENCHMARK_DELIVERY}
