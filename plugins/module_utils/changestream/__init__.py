# -*- coding: utf-8 -*-
# Copyright: (c) 2026, edgefleet maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The optional change stream (docs/changestream.md): pure logic and two host programs.

envelope    the Debezium-compatible event, its stable id, its routing key, parsing (poison check)
devices     GTID domain / rewritten schema -> device id, from the device records
checkpoint  the capture position (one GTID per domain), written atomically after confirms
fanin       the fan-in's plan for one event: upsert/delete by device + primary key, or refusal
capture     program: replica binlog -> RabbitMQ (mysql-replication, pika)
consumer    program: RabbitMQ -> central MariaDB (pika, PyMySQL)
"""
