*** Settings ***
Documentation     Message queuing during disconnection: everything produced for a user who is away
...               is kept in a bounded offline queue, prioritised, expired when stale, and
...               delivered on reconnect in priority order, at least once and de-duplicable by
...               ``delivery_id``; every message pushed is delivered, dropped, rejected or expired.
...
...               Parameters are the original plan's (docs/original-plans.md, suite 2). Pushes come from
...               an admin connection (APEX_ADMIN_TOKEN); a server without ``push`` or
...               ``configure_session`` skips the scenarios that need them, saying so.

Resource          ../resources/offline_queue.resource

Suite Setup       Set Up Apex Target    admin
Suite Teardown    Tear Down Apex Target
Test Setup        Connect The Test User
Test Teardown     Finish Test

Test Tags         offline-queue    pristine-user


*** Variables ***
${DELIVERY_TIMEOUT}        2 s
${MAX_RECONNECT_TIME}      1 s
${MAX_FIRST_DELIVERY}      2 s
${ORDER_COUNT}             ${5}
${PRIORITY_PUSHES}         N1 H1:high N2 C:critical L:low H2:high N3
${PRIORITY_DELIVERY}       C H1 H2 N1 N2 N3 L
${TTL}                     2 s
${TTL_CAPACITY}            ${3}
${REPLY_PROCESSING_MS}     ${300}
${CYCLES}                  ${5}
${PER_CYCLE}               ${2}
${MAX_MEAN_RECONNECT}      300 ms
${MAX_SINGLE_RECONNECT}    500 ms
${BOUNDED_CAPACITY}        ${5}
${BOUNDED_PUSHES}          ${10}
${MIN_PUSH_RATE}           10
${MAX_DELIVERY_TIME}       1 s
${PARTITION_PUSHES}        P1 P2 P3


*** Test Cases ***
A Message Pushed While The User Is Away Is Delivered On Reconnect
    [Documentation]    One message pushed to a user who is away: the reconnect takes under 1 s, the
    ...    message arrives within 2 s of it, intact, and nothing is left queued.
    [Tags]    delivery
    The User Goes Away
    Push Messages    ${USER}    Hello
    The User Comes Back And Receives    1
    Delivered Messages Should Be    Hello    connection=${USER}
    Get Reconnect Time    max    <    ${MAX_RECONNECT_TIME}
    Get Delivery Time    <    ${MAX_FIRST_DELIVERY}    connection=${USER}
    The Offline Queue Should Be Empty
    Offline Messages Should Be Accounted For    ${USER}

Messages Queued While Away Arrive In The Order They Were Pushed
    [Documentation]    Five messages of one priority arrive in push order, each once.
    [Tags]    delivery    ordering
    The User Goes Away
    Push Numbered Messages    ${USER}    ${ORDER_COUNT}
    The User Comes Back And Receives    ${ORDER_COUNT}
    Delivered Messages Should Be    M1 M2 M3 M4 M5    connection=${USER}
    Every Queued Message Should Be Delivered Once In Priority Order

Offline Queue Overflow Follows The Configured Policy
    [Documentation]    Capacity 3, five pushes: ``drop_oldest`` keeps the newest (evicting the oldest of
    ...    the lowest priority, so a critical message survives), ``drop_newest`` keeps the first
    ...    three, ``reject`` keeps the first three and tells the pusher which were refused.
    [Tags]    overflow
    [Setup]    NONE
    [Template]    Overflow Should Follow The Policy
    policy=drop_oldest    capacity=3    pushed=N1 N2 N3 N4 N5    delivered=N3 N4 N5    dropped=N1 N2
    policy=drop_newest    capacity=3    pushed=N1 N2 N3 N4 N5    delivered=N1 N2 N3    dropped=N4 N5
    policy=reject    capacity=3    pushed=N1 N2 N3 N4 N5    delivered=N1 N2 N3    rejected=N4 N5
    policy=drop_oldest    capacity=3    pushed=C:critical N1 N2 H:high    delivered=C H N2    dropped=N1

Queued Messages Are Delivered By Priority Then In Push Order
    [Documentation]    N1 H1 N2 C L H2 N3 pushed while away arrive as C H1 H2 N1 N2 N3 L.
    [Tags]    ordering    priority
    The User Goes Away
    Push Messages    ${USER}    ${PRIORITY_PUSHES}
    The User Comes Back And Receives    7
    Every Queued Message Should Be Delivered Once In Priority Order
    Delivered Messages Should Be    ${PRIORITY_DELIVERY}    connection=${USER}

Overflow Never Evicts A Higher Priority Message First
    [Documentation]    Capacity 3 under drop_oldest, pushing C1 N1 N2 H1 L1 N3: each overflow evicts
    ...    the oldest message of the lowest priority (or drops an incoming message lower than
    ...    everything queued), so the critical and high messages survive.
    [Tags]    overflow    priority
    Configure Session    offline_capacity=3    overflow_policy=drop_oldest    connection=${USER}
    The User Goes Away
    Push Messages    ${USER}    C1:critical N1 N2 H1:high L1:low N3
    Evictions Should Respect Priority    ${USER}
    Push Results Should Be    ${USER}    dropped=N1 L1 N2
    The User Comes Back And Receives    3
    Delivered Messages Should Be    C1 H1 N3    connection=${USER}

Expired Messages Are Not Delivered And Free Their Capacity
    [Documentation]    TTL 2 s, capacity 3, policy reject: three messages pushed, left past their
    ...    TTL, then two fresh ones pushed. The fresh ones are accepted (the expired ones no
    ...    longer take capacity), and only they arrive; the server counts three expired.
    [Tags]    ttl    overflow
    Configure Session    offline_capacity=${TTL_CAPACITY}    overflow_policy=reject    offline_ttl=${TTL}
    ...    connection=${USER}
    The User Goes Away
    Push Messages    ${USER}    I1 I2 I3
    Wait Until Pushed Messages Expire    ${USER}    I1 I2 I3
    Push Messages    ${USER}    F1 F2
    Push Results Should Be    ${USER}    message=Expired messages must stop taking capacity
    The User Comes Back And Receives    2
    Delivered Messages Should Be    F1 F2    connection=${USER}
    Offline Messages Should Be Accounted For    ${USER}

A Reply That Finishes While The User Is Away Is Delivered On Reconnect
    [Documentation]    The user asks, then leaves before the 300 ms answer is ready: the answer
    ...    waits in the offline queue and arrives once after the reconnect, with a delivery_id.
    [Tags]    delivery    reply
    Configure Session    processing_ms=${REPLY_PROCESSING_MS}    connection=${USER}
    Send Message    Summarise my week    reply-1    connection=${USER}
    The User Goes Away
    Wait Until Offline Queue Holds    ${USER}    1    timeout=${RESPONSE_TIMEOUT}
    The User Comes Back And Receives    1
    Delivered Messages Should Be    reply-1    connection=${USER}
    Every Message Should Have Exactly One Outcome    connection=${USER}
    The Offline Queue Should Be Empty

An Unacknowledged Delivery Is Delivered Again After A Drop
    [Documentation]    A delivery the client did not acknowledge before its connection dropped
    ...    comes again after the next reconnect, flagged ``redelivered``; once acknowledged it
    ...    is gone.
    [Tags]    delivery    redelivery
    Set Automatic Acknowledgement    ${False}    ${USER}
    The User Goes Away
    Push Messages    ${USER}    R1
    The User Comes Back And Receives    1
    Drop Connection    ${USER}
    Set Automatic Acknowledgement    ${True}    ${USER}
    Reconnect    ${USER}
    Unacknowledged Deliveries Should Be Redelivered    ${USER}    timeout=${DELIVERY_TIMEOUT}
    Deliveries Should Have No Duplicates    ${USER}
    The Offline Queue Should Be Empty

Rapid Disconnect And Reconnect Cycles Lose Nothing
    [Documentation]    Five cycles of going away, two pushes, and coming back: every message
    ...    delivered once, reconnects on average under 300 ms and never over 500 ms.
    [Tags]    reconnect    delivery
    Run Disconnect Reconnect Cycles    ${CYCLES}    ${PER_CYCLE}
    Get Reconnect Time    mean    <    ${MAX_MEAN_RECONNECT}
    Get Reconnect Time    max    <    ${MAX_SINGLE_RECONNECT}
    Every Queued Message Should Be Delivered Once In Priority Order

Messages From Concurrent Pushers Are All Delivered In Each Pusher's Order
    [Documentation]    Three admin connections push 3, 3 and 2 messages at once to a user who is
    ...    away: all eight arrive, each pusher's in its order, none twice.
    [Tags]    concurrency    delivery
    The User Goes Away
    Push From Several Pushers    ${USER}    3    3    2
    The User Comes Back And Receives    8
    Every Queued Message Should Be Delivered Once In Priority Order

The Offline Queue Stays Within Its Capacity
    [Documentation]    Capacity 5, ten pushes while away: the server never holds more than five,
    ...    the five newest arrive, and pushed 10 = delivered 5 + dropped 5.
    [Tags]    resources    overflow
    Configure Session    offline_capacity=${BOUNDED_CAPACITY}    overflow_policy=drop_oldest    connection=${USER}
    The User Goes Away
    Push Numbered Messages    ${USER}    ${BOUNDED_PUSHES}
    Get Offline Queue Peak    ${USER}    <=    ${BOUNDED_CAPACITY}
    The User Comes Back And Receives    ${BOUNDED_CAPACITY}
    Delivered Messages Should Be    M6 M7 M8 M9 M10    connection=${USER}
    Offline Messages Should Be Accounted For    ${USER}

Messages Pushed During A Network Partition Are Not Lost
    [Documentation]    While a partition hides the user (the server still thinks the user is
    ...    connected), three messages are pushed. When the partition heals they arrive on the
    ...    same connection; when it ends in a reset instead, they arrive after the reconnect,
    ...    flagged redelivered. Either way each arrives once, in push order.
    [Tags]    delivery    partition    network
    [Setup]    NONE
    [Template]    Messages Pushed During A Partition Should Arrive
    end=heal    labels=${PARTITION_PUSHES}
    end=cut    labels=${PARTITION_PUSHES}

Delivery Stays Prompt As The Offline Queue Grows
    [Documentation]    1, 5, 10, 25 and 50 messages queued (more than 10 per second) are each
    ...    delivered in under 1 s after the reconnect.
    [Tags]    scaling    performance
    [Setup]    NONE
    [Template]    Queued Messages Should Be Delivered Promptly
    count=1    min_rate=${MIN_PUSH_RATE}    max_time=${MAX_DELIVERY_TIME}
    count=5    min_rate=${MIN_PUSH_RATE}    max_time=${MAX_DELIVERY_TIME}
    count=10    min_rate=${MIN_PUSH_RATE}    max_time=${MAX_DELIVERY_TIME}
    count=25    min_rate=${MIN_PUSH_RATE}    max_time=${MAX_DELIVERY_TIME}
    count=50    min_rate=${MIN_PUSH_RATE}    max_time=${MAX_DELIVERY_TIME}
