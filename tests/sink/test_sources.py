"""The sink's MQTT source: what of the gateways' topic tree it takes."""


def test_the_sink_passes_over_commands_on_the_gateways_topic_tree():
    from sink.sources import _downlink

    for topic in ("headrace/v1/plant/line2/cmd/_fleet", "headrace/v1/plant/line2/cmd/m2",
                  "headrace/v1/plant/line2/cmd_result/m2"):
        assert _downlink(topic), topic
    for topic in ("headrace/v1/plant/line2/events", "headrace/v1/plant/line2/data", "headrace/v1/plant/cmd/x/y",
                  "other/v1/plant/line2/cmd/m2", "headrace/v1/plant/line2/cmd"):
        assert not _downlink(topic), topic
