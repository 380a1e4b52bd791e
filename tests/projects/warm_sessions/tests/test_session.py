def test_one_session(sessions, request):
    assert len(sessions) == 1
    assert sessions[0] is request.session
