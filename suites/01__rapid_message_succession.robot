*** Settings ***
Documentation     Rapid message succession: when one user fires messages quickly, every message is
...               answered once, in order; duplicates are rejected; overflow is refused with
...               backpressure that favours high priority; the agent's state keeps up; the
...               connection stays healthy; agents that share work stay in sync.
...
...               Parameters are the original plan's (docs/original-plans.md, suite 1). The burst pause
...               is shortened for the mock; ``-V resources/variables/soak.py`` restores it.

Resource          ../resources/rapid_succession.resource

Suite Setup       Set Up Apex Target
Suite Teardown    Tear Down Apex Target
Test Setup        Connect As A New Test User
Test Teardown     Finish Test

Test Tags         rapid-succession


*** Variables ***
${SEQUENTIAL_COUNT}               ${20}
${SEQUENTIAL_INTERVAL}            100 ms
${DUPLICATE_SENDS}                ${10}
${DUPLICATE_JITTER}               50 ms
${DUPLICATE_MESSAGE_ID}           unique-message-12345
${QUEUE_CAPACITY}                 ${500}
${OVERFLOW_EXTRA}                 ${50}
${HIGH_PRIORITY_EVERY}            ${10}
${OVERFLOW_PROCESSING_MS}         ${10}
${OVERFLOW_TIMEOUT}               15 s
${MIN_HIGH_PRIORITY_PRESERVED}    0.8
${MAX_QUEUE_OVERSHOOT}            1.1
${CONVERSATION_INTERVAL}          200 ms
@{CONVERSATION}
...                               Let's analyze sales data
...                               Focus on Q3 2024
...                               Compare with Q2
...                               Show regional breakdown
...                               Highlight top performers
...                               Export to spreadsheet
...                               Schedule monthly update
...                               Set alert thresholds
...                               Create dashboard view
...                               Share with team
${MAX_TOTAL_OBJECTS}              ${10000}
${BURSTS}                         ${15}
${BURST_SIZE}                     ${10}
${BURST_INTERVAL}                 50 ms
${BURST_PAUSE}                    250 ms
${MIN_DELIVERY_RATIO}             0.95
${MAX_MEAN_RESPONSE_TIME}         0.5 s
${MAX_RESPONSE_TIME}              2 s
${MAX_MEMORY_GROWTH_MB}           100
${COORDINATION_INTERVAL}          100 ms
&{LOAD_CUSTOMERS}
...                               content=Load customer database
...                               target_agents=data
...                               shared_state_key=customer_data
&{ANALYZE_SEGMENTS}
...                               content=Analyze customer segments
...                               target_agents=data,analysis
...                               shared_state_key=customer_segments
&{CALCULATE_METRICS}
...                               content=Calculate segment metrics
...                               target_agents=analysis
...                               shared_state_key=segment_metrics
&{GENERATE_REPORT}
...                               content=Generate segment report
...                               target_agents=analysis,reporting
...                               shared_state_key=segment_report
&{EXPORT_DASHBOARD}
...                               content=Export to dashboard
...                               target_agents=reporting
...                               shared_state_key=dashboard_export
@{COORDINATED_MESSAGES}
...                               ${LOAD_CUSTOMERS}
...                               ${ANALYZE_SEGMENTS}
...                               ${CALCULATE_METRICS}
...                               ${GENERATE_REPORT}
...                               ${EXPORT_DASHBOARD}
${BENCHMARK_COUNT}                ${100}
${BENCHMARK_INTERVAL}             10 ms
${MIN_THROUGHPUT}                 10
${MAX_P95_RESPONSE_TIME}          1 s


*** Test Cases ***
Messages In Rapid Succession Are Answered In Order Exactly Once
    [Documentation]    20 numbered messages 100 ms apart: all answered, in send order, none twice,
    ...    and the agent counted 20 with last sequence 19.
    [Tags]    ordering    idempotency    pristine-user
    Send Numbered Messages    ${SEQUENTIAL_COUNT}    ${SEQUENTIAL_INTERVAL}
    Wait Until Messages Are Settled    ${RESPONSE_TIMEOUT}
    Every Message Should Be Answered Exactly Once In Order
    The Agent State Should Count The Messages    ${SEQUENTIAL_COUNT}

A Message Sent Repeatedly Is Processed Exactly Once
    [Documentation]    One message_id sent 10 times with 0–50 ms jitter (a UI resending): one
    ...    ai_response, nine duplicate_rejected, and the id once in the agent's processed list.
    [Tags]    idempotency    pristine-user
    Send Duplicate Messages    Analyze the Q3 sales data trends    ${DUPLICATE_MESSAGE_ID}
    ...    ${DUPLICATE_SENDS}    max_jitter=${DUPLICATE_JITTER}
    Wait Until Messages Are Settled    ${RESPONSE_TIMEOUT}
    The Message Should Be Answered Once And Its Repeats Rejected    ${DUPLICATE_MESSAGE_ID}    ${DUPLICATE_SENDS}
    The Message Should Be Processed Once    ${DUPLICATE_MESSAGE_ID}

Queue Overflow Is Refused With Backpressure That Favours High Priority
    [Documentation]    Capacity + 50 messages as fast as possible, every 10th high priority: the
    ...    server refuses the overflow with queue_full, keeps high-priority messages (using its
    ...    10% headroom), never exceeds capacity + headroom, and settles every message once.
    [Tags]    backpressure    priority    pristine-user
    Flood The Queue Beyond Its Capacity    ${QUEUE_CAPACITY}    ${OVERFLOW_EXTRA}
    ...    ${HIGH_PRIORITY_EVERY}    ${OVERFLOW_PROCESSING_MS}
    Wait Until Messages Are Settled    ${OVERFLOW_TIMEOUT}
    The Server Should Have Signalled Backpressure
    Get Priority Preservation    high    >=    ${MIN_HIGH_PRIORITY_PRESERVED}
    Get Priority Preservation    high    >=    ${MIN_HIGH_PRIORITY_PRESERVED}    under_backpressure=${True}
    The Queue Should Have Respected Its Capacity    ${QUEUE_CAPACITY}    ${MAX_QUEUE_OVERSHOOT}
    Every Message Should Have Exactly One Outcome

Agent State Keeps Up With A Rapid Conversation
    [Documentation]    Ten conversation messages 200 ms apart: after each answer the agent has
    ...    counted it and it is last in the history; at the end the conversation is complete,
    ...    the state is small and not corrupted.
    [Tags]    state    pristine-user
    Send Conversation    @{CONVERSATION}    interval=${CONVERSATION_INTERVAL}    check_state_after_each=${True}
    Get Agent State    message_count    ==    ${{len($CONVERSATION)}}
    Get Agent State    conversation_complete    ==    ${True}
    Get Agent State    memory_usage.total_objects    <    ${MAX_TOTAL_OBJECTS}
    Agent State Should Not Be Corrupted

Connection Stays Healthy Through Message Bursts
    [Documentation]    15 bursts of 10 messages 50 ms apart: no disconnection, at least 95%
    ...    delivered, response times within limits, memory growth within limit (server and
    ...    client measured separately).
    [Tags]    stability
    Start Resource Monitor
    Start Connection Monitor    interval=250 ms
    Send Message Bursts    ${BURSTS}    ${BURST_SIZE}    ${BURST_INTERVAL}    ${BURST_PAUSE}
    Wait Until Messages Are Settled    ${RESPONSE_TIMEOUT}    must_settle=${False}
    The Connection Should Have Stayed Healthy
    Get Delivery Ratio    >=    ${MIN_DELIVERY_RATIO}
    Response Times Should Stay Within    ${MAX_MEAN_RESPONSE_TIME}    ${MAX_RESPONSE_TIME}
    Memory Should Not Grow Beyond    ${MAX_MEMORY_GROWTH_MB}

Agents Stay In Sync Across Coordinated Messages
    [Documentation]    Three agents, five messages targeting one or two of them: processed counts
    ...    2/3/2, every shared value the same in each agent holding it, and each contribution
    ...    reports the message's own sequence.
    [Tags]    agents    state
    Configure Agents    data    analysis    reporting
    Send Messages    ${COORDINATED_MESSAGES}    ${COORDINATION_INTERVAL}
    Wait Until Messages Are Settled    ${RESPONSE_TIMEOUT}
    Every Message Should Be Answered
    Agent Processed Counts Should Be    data=2    analysis=3    reporting=2
    Shared State Should Agree Across Agents
    Contributing Agents Should Match Sequence
    Agent State Should Not Be Corrupted

Rapid Succession Benchmark Meets Throughput And Latency Targets
    [Documentation]    100 messages 10 ms apart: every one answered, at least 10 answered per
    ...    second, and p95 response time (from the scheduled send) within 1 s.
    [Tags]    benchmark    latency
    Send Numbered Messages    ${BENCHMARK_COUNT}    ${BENCHMARK_INTERVAL}
    ...    message_id=bench-{i}    content=Benchmark message {i}
    Wait Until Messages Are Settled    ${RESPONSE_TIMEOUT}
    Every Message Should Be Answered
    Get Answered Throughput    >=    ${MIN_THROUGHPUT}
    Get Response Time    p95    <=    ${MAX_P95_RESPONSE_TIME}
