import smtplib

from harness.journal import Kind


def test_integration_gets_the_world_from_env(ct_world):
    env = ct_world.sut_env()  # pass these to your integration (subprocess env, settings, ...)
    host, port = env["HARNESS_RELAY"].split(":")

    # What your integration would do: relay a campaign message to the fake relay.
    with smtplib.SMTP(host, int(port)) as smtp:
        smtp.sendmail("news@brand.test", ["ok@example.com"], "Subject: Hi\r\n\r\nHello\r\n")

    [message] = ct_world.entries(Kind.SMTP_MESSAGE)
    assert message.data.subject == "Hi"
