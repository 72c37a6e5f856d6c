*** Settings ***
Documentation    Acceptance suites of the Apex real-time AI chat platform: messages answered in
...              order and exactly once under rapid succession, offline users' messages queued
...              and delivered, throughput, latency, backpressure and memory under load, and
...              agent runs that stream their events intact.
...
...              What this run tested (target, dialect, faults, fault proxy) is in the metadata
...              below; ``summary.html``, next to this file, has every guarantee on one page.

Name             Apex Acceptance
