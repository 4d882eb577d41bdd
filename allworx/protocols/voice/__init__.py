"""Voice: RTP media, G.711, WAV files, DTMF, and the voicemail that uses them."""
