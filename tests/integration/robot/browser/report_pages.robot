*** Settings ***
Documentation     The project's HTML pages (Robot's log.html and report.html, summary.html,
...               the fault matrix's matrix.html) as a stakeholder sees them, in headless
...               Chromium from Debian's packages: each page loads, nothing on it fails to
...               load or comes from the network, the browser console shows no error, and
...               every chart (``.apex-chart``) is visible, of some size and drawn. A Robot
...               log is first expanded as a reader would, so that charts inside keywords show.
...
...               Each page leaves a full-page screenshot in the output directory
...               (``page-<n>-<file>.png``, and ``page-<n>-<file>-expanded.png`` for a Robot
...               log once expanded).
...
...               Give the pages in a variable file (tests/integration/browser.py writes one):
...               ``{"PAGES": ["out/log.html", "out/summary.html"], "MIN_CHARTS": {"summary.html": 2}}``
...               and run ``robot --variablefile pages.json --outputdir out/browser
...               tests/integration/robot/browser/report_pages.robot``.

Library           OperatingSystem
Library           SeleniumLibrary    timeout=${PAGE_TIMEOUT}
Library           PageChecks.py

Suite Setup       Open Headless Chromium
Suite Teardown    Close Headless Chromium


*** Variables ***
@{PAGES}                    @{EMPTY}
&{MIN_CHARTS}               &{EMPTY}
${MIN_CHART_SIZE}           ${20}
${PAGE_TIMEOUT}             30 s
${EXPAND_TIMEOUT}           120 s
${WINDOW_WIDTH}             ${1400}
${WINDOW_HEIGHT}            ${2000}
${MAX_SCREENSHOT_HEIGHT}    ${16000}
${CHROMIUM}                 /usr/bin/chromium
${CHROMEDRIVER}             /usr/bin/chromedriver
@{CHROMIUM_ARGUMENTS}
...                         --headless=new
...                         --no-sandbox
...                         --disable-gpu
...                         --disable-dev-shm-usage
...                         --disable-quic
...                         --no-first-run
...                         --disable-background-networking
...                         --disable-component-update
...                         --disable-sync
...                         --host-resolver-rules=MAP * ~NOTFOUND


*** Test Cases ***
Report Pages Load Completely And Show Their Charts
    [Documentation]    Every page in ``@{PAGES}`` in turn; a page that fails does not stop the
    ...    others, and the test's message lists what failed on each.
    [Template]    Page Should Load Completely And Show Its Charts
    FOR    ${index}    ${page}    IN ENUMERATE    @{PAGES}    start=1
        ${page}    ${index}
    END


*** Keywords ***
Open Headless Chromium
    [Documentation]    Start Debian's Chromium headless, through Debian's chromedriver (nothing
    ...    is downloaded), with a fresh profile directory and a window of a fixed size.
    Should Not Be Empty    ${PAGES}    msg=No pages to check: give the list PAGES in a variable file.
    File Should Exist    ${CHROMIUM}    Chromium is not installed: run .ci/install-browser.
    File Should Exist    ${CHROMEDRIVER}    chromedriver is not installed: run .ci/install-browser.
    Set Environment Variable    SE_OFFLINE    true
    ${options}=    Headless Chromium Options    ${CHROMIUM}    @{CHROMIUM_ARGUMENTS}
    Open Browser    about:blank    chrome    options=${options}    service=executable_path='${CHROMEDRIVER}'
    Set Window Size    ${WINDOW_WIDTH}    ${WINDOW_HEIGHT}
    Set Selenium Page Load Timeout    ${PAGE_TIMEOUT}

Close Headless Chromium
    [Documentation]    Close every browser this suite opened and remove its profile directory.
    Close All Browsers
    Remove Chromium Profiles

Page Should Load Completely And Show Its Charts
    [Documentation]    Open ``${page}``, take its screenshot (a Robot log: expand it and take
    ...    another), then check everything on it. ``${index}`` numbers the screenshots.
    [Arguments]    ${page}    ${index}
    Open Report Page    ${page}
    ${name}=    Evaluate    pathlib.Path($page).stem    modules=pathlib
    Capture Full Page Screenshot    page-${index}-${name}.png
    ${is_log}=    Page Is A Robot Log
    IF    ${is_log}
        Expand Robot Log
        Capture Full Page Screenshot    page-${index}-${name}-expanded.png
    END
    ${minimum}=    Minimum Charts    ${page}    ${MIN_CHARTS}
    Page Content Should Be Complete    ${minimum}

Open Report Page
    [Documentation]    Show the page file ``${page}`` in the browser and wait until it has loaded,
    ...    with a fresh browser console.
    [Arguments]    ${page}
    File Should Exist    ${page}
    ${url}=    Page Url    ${page}
    Clear Browser Console Log
    Go To    ${url}
    Wait For Condition    return document.readyState === 'complete'    timeout=${PAGE_TIMEOUT}
    Page Should Have Loaded

Expand Robot Log
    [Documentation]    A Robot log draws its suites, tests and keywords from data embedded in the
    ...    page, collapsed. Open every one of them, as the log's "Expand all" icon does, so that
    ...    charts logged inside keywords are drawn.
    Wait Until Page Contains Element    css:#s1 > .element-header
    Expand Every Log Element    timeout=${EXPAND_TIMEOUT}

Capture Full Page Screenshot
    [Documentation]    Save the whole page, not only the window, as ``${file}`` in the output
    ...    directory: the viewport is made as high as the page (at most
    ...    ${MAX_SCREENSHOT_HEIGHT} px) for the picture, then given its size back.
    [Arguments]    ${file}
    Fit Viewport To Page    max_height=${MAX_SCREENSHOT_HEIGHT}
    Capture Page Screenshot    ${file}
    [Teardown]    Restore Viewport

Page Content Should Be Complete
    [Documentation]    Everything on the open page: every check runs even when one fails, so
    ...    that the message lists all that is wrong with the page.
    [Tags]    robot:continue-on-failure
    [Arguments]    ${minimum_charts}
    Every Image Should Have Loaded    timeout=${PAGE_TIMEOUT}
    Page Should Not Have Used The Network
    Browser Console Should Show No Errors
    Every Chart Should Be Drawn    minimum=${minimum_charts}    min_size=${MIN_CHART_SIZE}
