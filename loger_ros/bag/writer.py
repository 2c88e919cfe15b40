"""The output bag of ``loger-replay``: a rosbag2 (mcap) with the input's camera topics copied and
the node's publications, under the node's resolved topic names."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from loger_ros.params import DIAGNOSTICS_TOPIC, NODE_NAME, OUTPUT_TOPICS
from loger_ros.publications import CHANNEL_TYPES, Publication

__all__ = ["OutputBag", "output_topic_names"]


def output_topic_names(node_name: str = NODE_NAME) -> dict[str, str]:
    """channel -> topic in the output bag: the node's resolved names (``~/odom`` -> ``/loger/odom``)."""
    names = {channel: f"/{node_name}/{topic.removeprefix('~/')}" for channel, topic in OUTPUT_TOPICS.items()}
    names.update(tf="/tf", tf_static="/tf_static", diagnostics=DIAGNOSTICS_TOPIC)
    return names


def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
                QosLiveliness.AUTOMATIC, zero, False)]


class OutputBag:
    """rosbag2 (mcap) writer: copies input connections and writes the core's publications."""

    def __init__(self, path: Path, typestore: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = path
        self.typestore = typestore
        # Version 8 stores QoS profiles as a YAML string, which Humble's rosbag2 can still parse (v9 cannot).
        self._writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self._topics = output_topic_names()
        self.counts: dict[str, int] = {}
        self.closed = False

    def _connection(self, topic: str, msgtype: str, source: Any = None) -> Any:
        if topic in self._connections:
            return self._connections[topic]
        latched = _latched_qos() if topic in (self._topics["map"], self._topics["grid"], self._topics["loop_closures"], "/tf_static") else ()
        if source is not None and source.msgdef.data and source.digest:
            conn = self._writer.add_connection(topic, msgtype, msgdef=source.msgdef.data, rihs01=source.digest,
                                               offered_qos_profiles=latched)
        else:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore, offered_qos_profiles=latched)
        self._connections[topic] = conn
        return conn

    def copy_raw(self, source_connection: Any, time_ns: int, rawdata: bytes) -> None:
        """A rosbag2 CDR message, written unchanged with its original definition."""
        conn = self._connection(source_connection.topic, source_connection.msgtype, source_connection)
        self._write(conn, time_ns, rawdata)

    def write_message(self, topic: str, msgtype: str, time_ns: int, msg: Any) -> None:
        conn = self._connection(topic, msgtype)
        self._write(conn, time_ns, bytes(self.typestore.serialize_cdr(msg, msgtype)))

    def write(self, pub: Publication, time_ns: int) -> None:
        self.write_message(self._topics[pub.channel], CHANNEL_TYPES[pub.channel], time_ns, pub.msg)

    def _write(self, conn: Any, time_ns: int, data: bytes) -> None:
        self._writer.write(conn, int(time_ns), data)
        self.counts[conn.topic] = self.counts.get(conn.topic, 0) + 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
