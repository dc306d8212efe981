"""An example of testing a bot with matrix-qa's pytest plugin (docs/pytest.md): the independent nio bot.

    pytest --matrix-qa-bot tests/bots/nio-reply-bot.yaml tests/bots/example_pytest_nio_bot.py

Not collected by the repository's own test run (its name does not start with test_): tests/integration/
test_pytest_plugin.py runs it in a pytest session of its own, against the bot and one of its buggy variants.
"""


async def test_a_mention_is_answered_with_the_marker(matrix_qa):
    await matrix_qa.send(as_="driver", mention="bot", body="reply with only this exact marker: {token}", id="ask")
    reply = await matrix_qa.expect_reply(to="ask", body="{token}")
    assert reply.body == matrix_qa.marker("token")


async def test_a_mention_in_a_thread_is_answered_in_that_thread(matrix_qa):
    root = await matrix_qa.send(as_="driver", body="thread root", id="root")
    await matrix_qa.send(as_="driver", mention="bot", thread="root", body="reply with only this exact marker: {token}",
                         id="ask")
    reply = await matrix_qa.expect_reply(to="ask", body="{token}", thread="root")
    assert reply.relates_to["event_id"] == root.event_id


async def test_an_unmentioned_message_is_not_answered(matrix_qa):
    await matrix_qa.send(as_="driver", body="nobody asked you: {token}", id="chatter")
    # Silence is proved, not waited for: a later mention (the control) is answered, and nothing came before it.
    control = {"as": "driver", "body": "reply with only this exact marker: {token2}", "expect_body": "{token2}"}
    await matrix_qa.expect_no_reply(to="chatter", control=control)
